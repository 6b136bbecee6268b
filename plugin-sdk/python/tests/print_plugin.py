"""A plugin that writes to stdout every way a plugin's code might, for the tests of the
handshake pipe: its method "print" prints, writes to file descriptor 1 and runs a child
process that prints. With the argument "early" it also prints before serve(), after
calling redirect_stdout() as the README asks of such code."""

import os
import subprocess
import sys

import grpc

import baton_plugin
from baton_plugin import Description, Plugin, PluginError

EARLY = sys.argv[1:] == ["early"]
if EARLY:
    baton_plugin.redirect_stdout()
    print("printed at import", flush=True)


class Printer(Plugin):
    def describe(self):
        return Description("printer", "0.1.0", methods=[("print", "prints to stdout")])

    def invoke(self, method, payload):
        if method != "print":
            raise PluginError(grpc.StatusCode.UNIMPLEMENTED, f"no method {method!r}")
        print("printed by invoke")
        sys.stdout.flush()
        os.write(1, b"written to fd 1 by invoke\n")
        subprocess.run([sys.executable, "-c", "print('printed by a child of invoke')"], check=True)
        return b"done"


if __name__ == "__main__":
    baton_plugin.serve(Printer())
