"""The Python counter with its token check taken out: a plugin that accepts calls from
anyone. `baton check` must fail it."""

import os
import runpy

import baton_plugin.server as server


def accept_everyone(self, continuation, handler_call_details):
    return continuation(handler_call_details)


server._TokenCheck.intercept_service = accept_everyone
here = os.path.dirname(os.path.abspath(__file__))
runpy.run_path(os.path.join(here, "..", "..", "example-plugins", "python-counter", "counter.py"), run_name="__main__")
