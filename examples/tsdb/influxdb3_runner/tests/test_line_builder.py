"""LineBuilder's typing and escaping, as InfluxDB 3 writes each value."""

import unittest

from influxdb3_runner.line_builder import InvalidKeyError, InvalidLineError, InvalidMeasurementError, LineBuilder


class Typing(unittest.TestCase):
    def test_each_field_type_is_written_as_influxdb_types_it(self):
        line = (
            LineBuilder("m")
            .int64_field("i", -5)
            .uint64_field("u", 5)
            .float64_field("whole", 5)
            .float64_field("part", 2.5)
            .bool_field("yes", True)
            .bool_field("no", 0)
            .string_field("s", "text")
            .build()
        )
        self.assertEqual(line, 'm i=-5i,u=5u,whole=5.0,part=2.5,yes=t,no=f,s="text"')

    def test_time_ns_ends_the_line_and_without_it_the_server_stamps(self):
        self.assertEqual(LineBuilder("m").float64_field("v", 1.0).time_ns(123).build(), "m v=1.0 123")
        self.assertEqual(LineBuilder("m").float64_field("v", 1.0).build(), "m v=1.0")

    def test_a_key_given_twice_keeps_its_last_value(self):
        self.assertEqual(LineBuilder("m").int64_field("v", 1).int64_field("v", 2).build(), "m v=2i")

    def test_bad_values_raise_naming_the_field(self):
        cases = [
            (lambda: LineBuilder("m").uint64_field("u", -1), ValueError, "uint64 field 'u' cannot be negative (-1)"),
            (lambda: LineBuilder("m").int64_field("i", 1 << 63), ValueError, "int64 field 'i': 9223372036854775808 is out of the int64 range"),
            (lambda: LineBuilder("m").int64_field("i", 1.5), TypeError, "int64 field 'i': 1.5 is a float, not an int"),
            (lambda: LineBuilder("m").float64_field("f", "x"), TypeError, "float64 field 'f': 'x' is a str, not a number"),
            (lambda: LineBuilder("m").float64_field("f", float("nan")), ValueError, "float64 field 'f': nan is not finite"),
            (lambda: LineBuilder("m").string_field("s", 5), TypeError, "string field 's': 5 is a int, not a str"),
        ]
        for call, kind, message in cases:
            with self.assertRaises(kind) as raised:
                call()
            self.assertIn(message, str(raised.exception))


class Escaping(unittest.TestCase):
    def test_string_fields_escape_backslash_and_quote(self):
        line = LineBuilder("m").string_field("s", 'say "hi" \\ bye').build()
        self.assertEqual(line, 'm s="say \\"hi\\" \\\\ bye"')

    def test_tags_and_measurement_escape_what_line_protocol_splits_on(self):
        line = LineBuilder("a,b").tag("host", "x y,z=w\\").float64_field("v", 1).build()
        self.assertEqual(line, "a\\,b,host=x\\ y\\,z\\=w\\\\ v=1.0")

    def test_tag_values_are_str_ed(self):
        self.assertEqual(LineBuilder("m").tag("n", 5).float64_field("v", 1).build(), "m,n=5 v=1.0")


class Refusals(unittest.TestCase):
    def test_keys_and_measurement_are_checked(self):
        with self.assertRaisesRegex(InvalidMeasurementError, "cannot contain spaces"):
            LineBuilder("a b")
        for key, says in (("", "non-empty"), ("a b", "spaces"), ("a,b", "commas"), ("a=b", "equals signs")):
            with self.assertRaisesRegex(InvalidKeyError, says):
                LineBuilder("m").tag(key, "v")
            with self.assertRaisesRegex(InvalidKeyError, says):
                LineBuilder("m").int64_field(key, 1)

    def test_build_needs_a_field(self):
        with self.assertRaisesRegex(InvalidLineError, "at least one field is required: m"):
            LineBuilder("m").tag("t", "v").build()


if __name__ == "__main__":
    unittest.main()
