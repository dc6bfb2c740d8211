"""The JUnit XML shape ``domarkx check --junit`` writes, validated as CI reporters read it."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import xmlschema

# The JUnit shape domarkx writes (docs/checks.md): element -> (required attributes, children).
JUNIT_SCHEMA = {
    "testsuites": ({"name", "tests", "failures", "errors", "time"}, {"testsuite"}),
    "testsuite": (
        {"name", "tests", "failures", "errors", "skipped", "time", "timestamp"},
        {"testcase"},
    ),
    "testcase": ({"classname", "name", "time"}, {"failure", "error"}),
    "failure": ({"message", "type"}, set()),
    "error": ({"message", "type"}, set()),
}


# The JUnit XSD (the Ant/Jenkins junit-10 subset CI reporters read), checked by a real
# XML Schema validator.
JUNIT_XSD = Path(__file__).parent / "data" / "junit.xsd"


def validate_junit(element: ET.Element) -> None:
    """Raise where ``element`` leaves the JUnit XSD or the shape above; counts add up."""
    if element.tag == "testsuites":
        xmlschema.XMLSchema(JUNIT_XSD).validate(element)
    required, children = JUNIT_SCHEMA[element.tag]
    assert required <= set(element.attrib), (element.tag, element.attrib)
    for child in element:
        assert child.tag in children, (element.tag, child.tag)
        validate_junit(child)
    for number in ("tests", "failures", "errors", "skipped"):
        if number in element.attrib:
            assert int(element.attrib[number]) >= 0
    if "time" in required:
        float(element.attrib["time"])
    if element.tag == "testsuite":
        cases = element.findall("testcase")
        assert int(element.get("tests", -1)) == len(cases)
        assert int(element.get("failures", -1)) == sum(c.find("failure") is not None for c in cases)
        assert int(element.get("errors", -1)) == sum(c.find("error") is not None for c in cases)
