"""Kubernetes value syntax shared by the job spec, the renderer and the validator.

DNS-1123 names (the patterns platform-facts.md quotes from Volcano's schema) and resource
quantities (``8Gi``, ``500m``, ``1.5``, ``2e3``: Kubernetes' ``resource.Quantity`` grammar),
parsed to plain numbers so the spec and the validator can compare them.
"""

from __future__ import annotations

import re
from typing import Any

from vipr.config import Choices

DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")  # task names, pod host names: max 63
DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")  # max 253
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # what a shell can read back as $NAME

_QUANTITY_RE = re.compile(r"^([+-]?(?:\d+(?:\.\d*)?|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E))?$")
_SUFFIX = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
           "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
MIB = 2**20  # bytes; less memory than this for a training pod is a missing unit, not a real request


def is_dns_label(name: Any) -> bool:
    return isinstance(name, str) and len(name) <= 63 and bool(DNS_LABEL_RE.match(name))


def is_dns_subdomain(name: Any) -> bool:
    return isinstance(name, str) and len(name) <= 253 and bool(DNS_SUBDOMAIN_RE.match(name))


def parse_quantity(text: Any) -> float:
    """The number a quantity stands for (bytes for memory, cores for cpu); ValueError if it is none."""
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise ValueError(f"{text!r} is not a quantity")
    match = _QUANTITY_RE.match(str(text).strip())
    if not match:
        raise ValueError(f"{text!r} is not a quantity (e.g. 8Gi, 512Mi, 500m, 2)")
    number, exponent, suffix = match.groups()
    return float(number) * (10 ** int(exponent[1:]) if exponent else _SUFFIX.get(suffix, 1))


def is_quantity(text: Any) -> bool:
    try:
        parse_quantity(text)
    except ValueError:
        return False
    return True


def cpu_text(cores: float) -> str:
    """A cpu quantity: whole cores as ``"2"``, anything else in millicores (``"1500m"``)."""
    millis = round(cores * 1000)
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


class DnsLabel(Choices):
    """A config value that must be a DNS-1123 label (a Kubernetes object or task name)."""

    def __init__(self):
        super().__init__()

    def allows(self, value: Any) -> bool:
        return is_dns_label(value)

    def describe(self, kind: type) -> str:
        return "a DNS-1123 label (lowercase letters, digits and '-', starting and ending with a letter or digit, " \
               "at most 63 characters)"


class DnsSubdomain(Choices):
    """A config value that must be a DNS-1123 subdomain (queue, PVC and PriorityClass names)."""

    def __init__(self):
        super().__init__()

    def allows(self, value: Any) -> bool:
        return is_dns_subdomain(value)

    def describe(self, kind: type) -> str:
        return "a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', at most 253 characters)"


class MemoryQuantity(Choices):
    """A memory request: a quantity of at least 1Mi ('8m' is 8 millibytes, so the milli suffix is refused)."""

    def __init__(self):
        super().__init__()

    def allows(self, value: Any) -> bool:
        text = str(value).strip()
        return is_quantity(text) and not text.endswith("m") and parse_quantity(text) >= MIB

    def describe(self, kind: type) -> str:
        return "a memory quantity of at least 1Mi, such as 512Mi or 8Gi ('m' means milli, not mega)"
