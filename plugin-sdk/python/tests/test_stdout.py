"""stdout carries the handshake line and nothing else: whatever a plugin prints, by
print(), by writing to file descriptor 1 or from a child process, goes to stderr,
where the host logs it, and not into the pipe the host reads the handshake from."""

import signal
import sys
import unittest
from pathlib import Path

from baton_plugin._proto import pb

from support import PluginProcess

PRINT_PLUGIN = Path(__file__).with_name("print_plugin.py")
CALL_TIMEOUT = 10.0
EXIT_TIMEOUT = 10.0


class StdoutTest(unittest.TestCase):
    def run_printer(self, *args):
        p = PluginProcess([sys.executable, str(PRINT_PLUGIN), *args], "printer")
        self.addCleanup(p.close)
        self.assertEqual(p.read_handshake(), f"baton|1|unix|{p.socket}")
        reply = p.stub().Invoke(
            pb.InvokeRequest(method="print"), metadata=p.auth(), timeout=CALL_TIMEOUT
        )
        self.assertEqual(reply.payload, b"done")
        p.proc.send_signal(signal.SIGTERM)
        self.assertEqual(p.proc.wait(timeout=EXIT_TIMEOUT), 0, p.stderr())
        # The process has exited (and its child before it), so this read ends.
        rest = p.proc.stdout.read()
        self.assertEqual(rest, b"", f"stdout after the handshake; {p.stderr()}")
        return p.stderr()

    def test_prints_after_the_handshake_go_to_stderr(self):
        stderr = self.run_printer()
        for line in ("printed by invoke", "written to fd 1 by invoke", "printed by a child of invoke"):
            self.assertIn(line, stderr)

    def test_redirect_stdout_before_serve_keeps_early_prints_off_the_handshake(self):
        stderr = self.run_printer("early")
        self.assertIn("printed at import", stderr)
        self.assertIn("printed by invoke", stderr)


if __name__ == "__main__":
    unittest.main()
