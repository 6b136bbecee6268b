"""The plugin's socket path: only a stale socket is replaced; anything else is left as
it is, with an error naming the path."""

import os
import socket
import tempfile
import unittest

from baton_plugin import socket_path


class SocketPathTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory(prefix="baton-py-sock-")
        self.addCleanup(self.dir.cleanup)

    def path(self, name):
        return os.path.join(self.dir.name, name)

    def test_nothing_there_and_a_stale_socket_are_claimed(self):
        socket_path.claim(self.path("free.sock"))
        stale = self.path("stale.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(stale)
        listener.close()
        socket_path.claim(stale)
        self.assertFalse(os.path.lexists(stale))

    def test_a_regular_file_and_a_live_socket_are_left_alone_and_named(self):
        precious = self.path("precious.sock")
        with open(precious, "w") as f:
            f.write("x")
        with self.assertRaises(socket_path.SocketPathError) as refused:
            socket_path.claim(precious)
        self.assertIn(f"{precious} is a regular file, not a socket", str(refused.exception))
        with open(precious) as f:
            self.assertEqual(f.read(), "x")

        live = self.path("live.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(listener.close)
        listener.bind(live)
        listener.listen(1)
        with self.assertRaises(socket_path.SocketPathError) as refused:
            socket_path.claim(live)
        self.assertIn(live, str(refused.exception))
        self.assertTrue(os.path.lexists(live))

    def test_only_the_socket_bound_here_is_removed(self):
        path = self.path("plugin.sock")
        # Kept open, so that the second socket's file cannot reuse the first's inode.
        first = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(first.close)
        first.bind(path)
        ours = socket_path.bound(path)
        os.unlink(path)
        second = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(second.close)
        second.bind(path)
        socket_path.remove_if_ours(path, ours)
        self.assertTrue(os.path.lexists(path), "another process's socket was removed")


if __name__ == "__main__":
    unittest.main()
