"""The example Python trigger plugin with its token check taken out: its application service
answers anyone. `baton check` must fail it. Needs the trigger stubs on PYTHONPATH."""

import os
import runpy

import baton_plugin.server as server


def accept_everyone(self, continuation, handler_call_details):
    return continuation(handler_call_details)


server._TokenCheck.intercept_service = accept_everyone
here = os.path.dirname(os.path.abspath(__file__))
runpy.run_path(
    os.path.join(here, "..", "..", "example-plugins", "python-trigger", "trigger.py"), run_name="__main__"
)
