"""process_request's return conventions, as the HTTP answer InfluxDB 3 gives."""

import json
import unittest

from influxdb3_runner.responses import ResponseError, error_response, http_response

HTML = {"content-type": "text/html; charset=utf-8"}


class Conventions(unittest.TestCase):
    def test_each_convention(self):
        self.assertEqual(http_response("hi"), (200, HTML, b"hi"))
        self.assertEqual(http_response({"a": 1}), (200, {"content-type": "application/json"}, b'{"a": 1}'))
        self.assertEqual(http_response([1, 2]), (200, {"content-type": "application/json"}, b"[1, 2]"))
        self.assertEqual(http_response(("gone", 404)), (404, HTML, b"gone"))
        self.assertEqual(http_response(("x", {"X-A": "b"})), (200, {"x-a": "b", **HTML}, b"x"))
        self.assertEqual(
            http_response(("x", 201, [("Content-Type", "text/plain")])), (201, {"content-type": "text/plain"}, b"x")
        )
        self.assertEqual(http_response(iter(["a", b"b"])), (200, HTML, b"ab"))

    def test_what_is_no_response_is_named(self):
        for bad, says in (
            (None, "returned None"),
            (5, "returned a int"),
            (("x", 700), "status 700 is not an HTTP status"),
            (("x", 200, {}, 1), "2 or 3 items"),
            ((p for p in [1]), "piece is a int"),
        ):
            with self.assertRaisesRegex(ResponseError, says):
                http_response(bad)

    def test_a_raise_is_500_with_the_error(self):
        status, headers, body = error_response(ValueError("boom"))
        self.assertEqual((status, json.loads(body)), (500, {"error": "ValueError: boom"}))


if __name__ == "__main__":
    unittest.main()
