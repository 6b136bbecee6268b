//! The `counter` plugin binary: started by a baton host, never by hand.

fn main() -> std::process::ExitCode {
    baton_plugin_sdk::serve(counter_plugin::Counter::default())
}
