"""MUD files (suitsrv/mud.py): schema validity against the RFC 8520 and quarantine YANG modules
(yangson), the RFC 8520 rules that live only in prose, and the detached CMS signature as a
gateway checks it (`openssl cms -verify`, the CLI osMUD shells out to)."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyang
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yangson import DataModel
from yangson.enumerations import ContentType, ValidationScope
from yangson.exceptions import YangsonException

from suitsrv.mud import (
    EXTENSIONS,
    CloudService,
    MudPolicy,
    MudSigner,
    build_mud,
    encode_mud,
    mud_url,
    pinhole_ace_names,
    update_endpoint,
)

from .conftest import VECTORS_ENV, examples, vectors_root

CLASS_ID = "5e0a1d9a-3b7e-5c8f-9a49-1f8b2d3c4e5f"
WHEN = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
QUARANTINE_MEMBERS = (
    "ietf-mud-quarantine:quaranteed-device-policy",
    "nist-mud:quarantined-device-policy",
)
# The revisions vectors/mud/README.md validated with (pyang 2.7.1's bundled IETF modules).
IETF_MODULES = {
    "ietf-mud": "2019-01-28",
    "ietf-acldns": "2019-01-28",
    "ietf-access-control-list": "2019-03-04",
    "ietf-packet-fields": "2019-03-04",
    "ietf-ethertypes": "2019-03-04",
    "ietf-inet-types": "2013-07-15",
    "ietf-yang-types": "2013-07-15",
    "ietf-interfaces": "2018-02-20",
}
ACL_FEATURES = ["match-on-ipv4", "match-on-ipv6", "match-on-tcp", "match-on-udp"]
ACL_FEATURES += ["match-on-icmp", "ipv4", "ipv6"]
# ietf-interfaces is implemented, not only imported: the ACL model's ingress/egress-interface
# leafrefs point into it, and yangson refuses a leafref whose target is not in the schema.
IMPORT_ONLY = {"ietf-packet-fields", "ietf-ethertypes", "ietf-inet-types", "ietf-yang-types"}


def make_policy(base: str = "https://updates.example.com", **changes: Any) -> MudPolicy:
    host, port = update_endpoint(base)
    fields: dict[str, Any] = {
        "mud_url": mud_url(base, "acme", CLASS_ID),
        "systeminfo": "ACME Thermo X1 thermostat",
        "mfg_name": "acme",
        "model_name": "thermo-x1",
        "update_host": host,
        "update_port": port,
        "last_update": WHEN,
        "cloud_services": (CloudService("api.acme.example"),),
    }
    return MudPolicy(**(fields | changes))


def served(policy: MudPolicy) -> dict[str, Any]:
    """What a gateway parses: the encoded bytes, not the builder's tree."""
    doc: dict[str, Any] = json.loads(encode_mud(build_mud(policy)))
    return doc


BASES = ["https://updates.example.com", "http://127.0.0.1:8080", "https://[2001:db8::1]:8443"]


# -- RFC 8520 rules that schema validation cannot check ------------------------------------------

BASE_MODULES = {"ietf-mud", "ietf-access-control-list", "ietf-acldns"}


def modules_used(node: object) -> set[str]:
    """Modules named in RFC 7951 member names: where a node of another module starts."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if ":" in key:
                found.add(key.split(":", 1)[0])
            found |= modules_used(value)
    elif isinstance(node, list):
        for value in node:
            found |= modules_used(value)
    return found


def prose_violations(doc: dict[str, Any], served_at: str) -> list[str]:
    problems = []
    for root in ("ietf-mud:mud", "ietf-access-control-list:acls"):
        if root not in doc:
            problems.append(f"RFC 8520 §2.1: no {root} root")
    mud = doc.get("ietf-mud:mud", {})
    acls = {acl["name"]: acl for acl in doc.get("ietf-access-control-list:acls", {}).get("acl", [])}
    declared = set(mud.get("extensions", []))
    for module in sorted(modules_used(doc) - BASE_MODULES - declared):
        problems.append(f"RFC 8520 §3.9: {module} is used but not declared in extensions")
    ace_names = {a["name"] for acl in acls.values() for a in acl.get("aces", {}).get("ace", [])}
    for member in QUARANTINE_MEMBERS:
        for entry in mud.get(member, {}).get("enabled-ace-names", []):
            if entry["ace-name"] not in ace_names:
                problems.append(f"{member} enables {entry['ace-name']!r}, which is no ACE")
    for policy, wrong in (("from-device-policy", "src"), ("to-device-policy", "dst")):
        for ref in mud.get(policy, {}).get("access-lists", {}).get("access-list", []):
            acl = acls.get(ref["name"])
            if acl is None:
                problems.append(f"{policy} names ACL {ref['name']!r}, which does not exist")
                continue
            for ace in acl.get("aces", {}).get("ace", []):
                for family in ("ipv4", "ipv6"):
                    if f"ietf-acldns:{wrong}-dnsname" in ace["matches"].get(family, {}):
                        problems.append(f"RFC 8520 §8: {wrong}-dnsname in {policy} {ace['name']}")
    if mud.get("mud-url") != served_at:
        problems.append(f"mud-url {mud.get('mud-url')!r} is not where it is served ({served_at})")
    return problems


@pytest.mark.parametrize("base", BASES)
def test_generated_file_meets_the_prose_rules(base: str) -> None:
    policy = make_policy(base)
    doc = served(policy)
    assert prose_violations(doc, mud_url(base, "acme", CLASS_ID)) == []
    mud = doc["ietf-mud:mud"]
    assert mud["mud-signature"] == mud["mud-url"] + ".p7s"
    assert mud["extensions"] == list(EXTENSIONS) == ["ietf-mud-quarantine", "nist-mud"]


def test_prose_checker_catches_each_rule() -> None:
    doc = served(make_policy())
    mud = doc["ietf-mud:mud"]
    mud["extensions"] = ["nist-mud"]
    mud[QUARANTINE_MEMBERS[0]]["enabled-ace-names"].append({"ace-name": "nope"})
    mud["to-device-policy"]["access-lists"]["access-list"].append({"name": "missing"})
    acl = doc["ietf-access-control-list:acls"]["acl"][0]  # a from-device ACL
    acl["aces"]["ace"][0]["matches"]["ipv4"]["ietf-acldns:src-dnsname"] = "x.example"
    problems = prose_violations(doc, "https://elsewhere.example/mud.json")
    expected = ["§3.9: ietf-mud-quarantine", "enables 'nope'", "§8: src-dnsname", "ACL 'missing'"]
    expected += ["is not where it is served"]
    assert len(problems) == len(expected), problems
    for fragment, problem in zip(expected, problems, strict=True):
        assert fragment in problem
    assert prose_violations({}, "x")[:2] == [
        "RFC 8520 §2.1: no ietf-mud:mud root",
        "RFC 8520 §2.1: no ietf-access-control-list:acls root",
    ]


# -- the policy itself ---------------------------------------------------------------------------


def aces_by_acl(doc: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    return {
        acl["name"][-4:]: {ace["name"]: ace["matches"] for ace in acl["aces"]["ace"]}
        for acl in doc["ietf-access-control-list:acls"]["acl"]
    }


def test_pinhole_is_update_host_dns_and_ntp_both_directions() -> None:
    policy = make_policy()
    doc = served(policy)
    names = pinhole_ace_names(policy)
    assert names == (
        "fw0-frdev",
        "fw0-todev",
        "dns0-frdev",
        "dns0-todev",
        "ntp0-frdev",
        "ntp0-todev",
    )
    for member in QUARANTINE_MEMBERS:
        listed = [e["ace-name"] for e in doc["ietf-mud:mud"][member]["enabled-ace-names"]]
        assert listed == list(names)
    acls = aces_by_acl(doc)
    for family in ("v4", "v6"):
        fr, to = acls[family + "fr"], acls[family + "to"]
        ip = "ipv" + family[1]
        assert fr["fw0-frdev"][ip] == {
            "ietf-acldns:dst-dnsname": "updates.example.com",
            "protocol": 6,
        }
        assert fr["fw0-frdev"]["tcp"] == {
            "ietf-mud:direction-initiated": "from-device",
            "destination-port": {"operator": "eq", "port": 443},
        }
        assert to["fw0-todev"][ip] == {
            "ietf-acldns:src-dnsname": "updates.example.com",
            "protocol": 6,
        }
        assert to["fw0-todev"]["tcp"]["source-port"] == {"operator": "eq", "port": 443}
        assert to["fw0-todev"]["tcp"]["ietf-mud:direction-initiated"] == "from-device"
        for name, urn, port in (("dns0", "dns", 53), ("ntp0", "ntp", 123)):
            assert fr[f"{name}-frdev"] == {
                "ietf-mud:mud": {"controller": f"urn:ietf:params:mud:{urn}"},
                ip: {"protocol": 17},
                "udp": {"destination-port": {"operator": "eq", "port": port}},
            }
            assert to[f"{name}-todev"]["udp"] == {"source-port": {"operator": "eq", "port": port}}
        # the cloud API is normal policy only: quarantine must not open it
        assert "cl0-frdev" in fr and "cl0-todev" in to
        assert not {"cl0-frdev", "cl0-todev"} & set(names)


def test_ip_literal_update_host_matches_its_family_only() -> None:
    acls = aces_by_acl(served(make_policy("http://127.0.0.1:8080")))
    assert acls["v4fr"]["fw0-frdev"]["ipv4"] == {
        "destination-ipv4-network": "127.0.0.1/32",
        "protocol": 6,
    }
    assert acls["v4fr"]["fw0-frdev"]["tcp"]["destination-port"]["port"] == 8080
    assert acls["v4to"]["fw0-todev"]["ipv4"]["source-ipv4-network"] == "127.0.0.1/32"
    assert "fw0-frdev" not in acls["v6fr"] and "dns0-frdev" in acls["v6fr"]


def test_encoding_is_deterministic_crlf_utf8() -> None:
    policy = make_policy(systeminfo="Thermostat für Büros")
    data = encode_mud(build_mud(policy))
    assert data == encode_mud(build_mud(make_policy(systeminfo="Thermostat für Büros")))
    assert data.endswith(b"}\r\n")
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert b" \r\n" not in data  # openssl's text mode strips trailing spaces
    assert "für".encode() in data
    doc = json.loads(data)
    assert doc == build_mud(policy)
    assert list(doc) == ["ietf-mud:mud", "ietf-access-control-list:acls"]
    assert list(doc["ietf-mud:mud"])[:4] == [
        "mud-version",
        "mud-url",
        "last-update",
        "mud-signature",
    ]
    assert doc["ietf-mud:mud"]["last-update"] == "2026-11-26T12:00:00+00:00"
    same_instant = WHEN.astimezone(timezone(timedelta(hours=1)))
    policy = make_policy(systeminfo="Thermostat für Büros", last_update=same_instant)
    assert encode_mud(build_mud(policy)) == data  # last-update is written in UTC


def test_mud_url_shape() -> None:
    assert mud_url("https://u.example/", "acme", CLASS_ID) == (
        f"https://u.example/v1/mud/acme/{CLASS_ID}.json"
    )
    for vendor in ("..", "a/b", "", "a b"):
        with pytest.raises(RuntimeError):
            mud_url("https://u.example", vendor, CLASS_ID)
    assert update_endpoint("https://u.example") == ("u.example", 443)
    assert update_endpoint("http://[::1]:8080/") == ("::1", 8080)


@pytest.mark.parametrize(
    "changes",
    [
        {"last_update": datetime(2026, 1, 1)},  # naive: no time zone
        {"cache_validity": 0},
        {"cache_validity": 169},
        {"update_host": "not a host"},
        {"update_port": 0},
        {"mud_url": "ftp://x.example/m.json"},
        {"cloud_services": (CloudService("api.example", 70000),)},
    ],
)
def test_policy_rejects_misuse(changes: dict[str, Any]) -> None:
    with pytest.raises(RuntimeError):
        make_policy(**changes)


# -- schema validation (yangson) -----------------------------------------------------------------


def pyang_ietf_dir() -> Path:
    """pyang installs its IETF modules under <prefix>/share/yang/modules (pyang/repository.py)."""
    candidates = [
        Path(sys.prefix, "share", "yang", "modules", "ietf"),
        Path(pyang.__file__).resolve().parents[4] / "share" / "yang" / "modules" / "ietf",
    ]
    for candidate in candidates:
        if (candidate / "ietf-mud.yang").is_file():
            return candidate
    raise AssertionError(f"pyang's IETF modules not found in {candidates}")


def patched(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"vector changed: {old!r} should occur once"
    return text.replace(old, new)


def module_entry(path: Path, implement: bool) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    name = re.search(r"^module\s+([\w.-]+)", text, re.MULTILINE)
    revision = re.search(r"^\s*revision\s+\"?(\d{4}-\d{2}-\d{2})", text, re.MULTILINE)
    namespace = re.search(r'namespace\s+"([^"]+)"', text)
    assert name and revision and namespace, path
    entry = {
        "name": name[1],
        "revision": revision[1],
        "namespace": namespace[1],
        "conformance-type": "implement" if implement else "import",
    }
    if name[1] == "ietf-access-control-list":
        entry["feature"] = ACL_FEATURES
    return entry


def detext_module(root: Path) -> Path | None:
    """draft-ietf-opsawg-mud-25 Appendix C's module, if pyang or the vectors ever ship it."""
    for folder in (pyang_ietf_dir(), root / "mud" / "yang"):
        for path in sorted(folder.glob("ietf-mud-detext-example*.yang")):
            return path
    return None


@pytest.fixture(scope="module")
def data_model(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = vectors_root()
    if root is None:
        pytest.skip(f"{VECTORS_ENV} is not set")
    src = root / "mud" / "yang"
    quarantine = (src / "ietf-mud-quarantine@draft-02_shg-mud-quarantine@f517857.yang").read_text(
        encoding="utf-8"
    )
    nist = (src / "nist-mud@2019-04-28_nist-mud@0e2adc3.yang").read_text(encoding="utf-8")
    # The patches vectors/mud/README.md lists, so that the modules compile; nothing else.
    quarantine = patched(quarantine, 'revision "YYYY-MM-DD"', "revision 2020-11-02")
    quarantine = patched(
        quarantine,
        "  import ietf-mud {",
        "  import ietf-access-control-list { prefix acl; }\n  import ietf-mud {",
    )
    nist = patched(nist, "list enabled-ace-names {", "list enabled-ace-names {\n key ace-name;")
    yang = tmp_path_factory.mktemp("yang")
    (yang / "ietf-mud-quarantine@2020-11-02.yang").write_text(quarantine, encoding="utf-8")
    (yang / "nist-mud@2019-04-28.yang").write_text(nist, encoding="utf-8")
    detext = detext_module(root)
    if detext is not None:
        entry = module_entry(detext, True)
        shutil.copyfile(detext, yang / f"{entry['name']}@{entry['revision']}.yang")
    ietf = pyang_ietf_dir()
    entries = [module_entry(ietf / f"{n}.yang", n not in IMPORT_ONLY) for n in IETF_MODULES]
    assert {e["name"]: e["revision"] for e in entries} == IETF_MODULES
    entries += [module_entry(p, True) for p in sorted(yang.glob("*.yang"))]
    library = {
        "ietf-yang-library:modules-state": {"module-set-id": "suitsrv-mud", "module": entries}
    }
    return DataModel(json.dumps(library), [str(yang), str(ietf)])


def validate(data_model: Any, doc: dict[str, Any]) -> None:
    data_model.from_raw(doc).validate(ValidationScope.all, ContentType.all)


@pytest.mark.parametrize("base", BASES)
def test_generated_file_is_schema_valid(data_model: Any, base: str) -> None:
    validate(data_model, served(make_policy(base)))


LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", fullmatch=True)
HOSTS = st.one_of(
    st.lists(LABEL, min_size=1, max_size=4).map(".".join).filter(lambda h: len(h) <= 253),
    st.ip_addresses().map(str),
)
PORTS = st.integers(1, 65535)


@settings(
    max_examples=examples(60),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    host=HOSTS,
    port=PORTS,
    cloud=st.lists(st.builds(CloudService, HOSTS, PORTS), max_size=3).map(tuple),
    cache_validity=st.integers(1, 168),
    text=st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=60),
)
def test_every_accepted_policy_is_schema_and_prose_valid(
    data_model: Any,
    host: str,
    port: int,
    cloud: tuple[CloudService, ...],
    cache_validity: int,
    text: str,
) -> None:
    policy = make_policy(
        update_host=host,
        update_port=port,
        cloud_services=cloud,
        cache_validity=cache_validity,
        systeminfo=text,
        model_name=text,
    )
    doc = served(policy)
    validate(data_model, doc)
    assert prose_violations(doc, policy.mud_url) == []


def _drop_fw0_frdev(doc: dict[str, Any]) -> None:
    for acl in doc["ietf-access-control-list:acls"]["acl"]:
        acl["aces"]["ace"] = [a for a in acl["aces"]["ace"] if a["name"] != "fw0-frdev"]


def _long_ace_name(doc: dict[str, Any]) -> None:
    doc["ietf-access-control-list:acls"]["acl"][0]["aces"]["ace"][0]["name"] = "x" * 65


MUTATIONS: dict[str, Callable[[dict[str, Any]], None]] = {
    "enabled ACE missing (leafref)": _drop_fw0_frdev,
    "cache-validity as a string": lambda d: d["ietf-mud:mud"].update({"cache-validity": "48"}),
    "unknown member": lambda d: d["ietf-mud:mud"].update({"ietf-mud:colour": "red"}),
    "ACE name over 64 characters (length 1..64)": _long_ace_name,
}


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_schema_validation_has_teeth(data_model: Any, mutation: str) -> None:
    doc = served(make_policy())
    validate(data_model, copy.deepcopy(doc))
    MUTATIONS[mutation](doc)
    with pytest.raises(YangsonException):
        validate(data_model, doc)


# file -> (schema-valid per vectors/mud/README.md, prose violations we expect)
VECTORS = {
    "rfc8520_s9_lightbulb2000.json": (True, []),
    "draft-ietf-opsawg-mud-25_s9_lightbulb2000.json": (True, []),
    "nist-mud_mudfile-quarantine-test.json": (
        True,
        ["RFC 8520 §3.9: nist-mud is used but not declared in extensions"],
    ),
    "draft-ietf-opsawg-mud-25_appB_default-nodes_FRAGMENT.json.txt": (
        True,
        ["RFC 8520 §2.1: no ietf-mud:mud root"],
    ),
    "draft-ietf-opsawg-mud-25_appC_detnet-extension.json": (False, []),
}


@pytest.mark.parametrize("name", VECTORS)
def test_public_vectors(data_model: Any, name: str) -> None:
    root = vectors_root()
    assert root is not None
    text = (root / "mud" / name).read_text(encoding="utf-8")
    doc = json.loads("{" + text + "}" if name.endswith("_FRAGMENT.json.txt") else text)
    schema_valid, problems = VECTORS[name]
    mud_url_ = doc.get("ietf-mud:mud", {}).get("mud-url")
    assert prose_violations(doc, mud_url_) == problems
    # Without its module yangson would reject the file for the wrong reason (an unknown member);
    # the README records it INVALID because "false" is a string, not a boolean.
    if "ietf-mud-detext-example" in modules_used(doc) and detext_module(root) is None:
        pytest.skip("module ietf-mud-detext-example is not available")
    if schema_valid:
        validate(data_model, doc)
    else:
        with pytest.raises(YangsonException):
            validate(data_model, doc)


# -- the detached CMS signature ------------------------------------------------------------------


def openssl_verify(
    p7s: Path, content: Path, ca: Path, *, binary: bool
) -> subprocess.CompletedProcess[str]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl CLI is not installed")
    # RFC 8520 §13.2's command has no -binary (text mode, as osMUD runs it); gateways that
    # follow RFC 8520 §13.1's signing command add it. Both must accept our files.
    argv = [openssl, "cms", "-verify", "-inform", "DER", "-in", str(p7s)]
    argv += ["-content", str(content), "-CAfile", str(ca), "-out", os.devnull]
    argv += ["-binary"] if binary else []
    return subprocess.run(argv, capture_output=True, text=True, check=False)


@pytest.fixture
def signer(tmp_path: Path) -> MudSigner:
    return MudSigner.load_or_create(tmp_path / "mud-keys", "suitsrv MUD signer")


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "rfc8520-13.2-text-mode"])
def test_signature_verifies_with_openssl_chain_check(
    signer: MudSigner, tmp_path: Path, binary: bool
) -> None:
    data = encode_mud(build_mud(make_policy()))
    sig = signer.sign(data)
    assert data not in sig  # detached
    assert sig[0] == 0x30  # DER SEQUENCE, not PEM/S-MIME
    (tmp_path / "m.json").write_bytes(data)
    (tmp_path / "m.json.p7s").write_bytes(sig)
    (tmp_path / "ca.pem").write_bytes(signer.certificate_pem())
    ok = openssl_verify(
        tmp_path / "m.json.p7s", tmp_path / "m.json", tmp_path / "ca.pem", binary=binary
    )
    assert ok.returncode == 0, ok.stderr

    flipped = bytearray(data)
    flipped[data.index(b"updates.example.com") + 1] ^= 0x01
    (tmp_path / "bad.json").write_bytes(bytes(flipped))
    bad = openssl_verify(
        tmp_path / "m.json.p7s", tmp_path / "bad.json", tmp_path / "ca.pem", binary=binary
    )
    assert bad.returncode != 0

    stranger = MudSigner.load_or_create(tmp_path / "other", "suitsrv MUD signer")
    (tmp_path / "other.pem").write_bytes(stranger.certificate_pem())
    untrusted = openssl_verify(
        tmp_path / "m.json.p7s", tmp_path / "m.json", tmp_path / "other.pem", binary=binary
    )
    assert untrusted.returncode != 0


def test_signer_files_and_reissue(tmp_path: Path) -> None:
    keys = tmp_path / "mud-keys"
    first = MudSigner.load_or_create(keys, "suitsrv MUD signer", now=WHEN)
    assert (keys / "mud-signing-key.pem").stat().st_mode & 0o777 == 0o600
    assert not list(keys.glob(".*"))  # no temp files left behind
    again = MudSigner.load_or_create(keys, "suitsrv MUD signer", now=WHEN)
    assert again.certificate == first.certificate
    assert again.certificate_pem() == (keys / "mud-signing-cert.pem").read_bytes()

    renamed = MudSigner.load_or_create(keys, "updates.example.com MUD", now=WHEN)
    later = MudSigner.load_or_create(
        keys, "updates.example.com MUD", now=WHEN + timedelta(days=3640)
    )
    (keys / "mud-signing-cert.pem").unlink()  # a crash between writing the key and the cert
    recovered = MudSigner.load_or_create(keys, "updates.example.com MUD", now=WHEN)
    serials = {s.certificate.serial_number for s in (first, renamed, later, recovered)}
    assert len(serials) == 4
    # the key, and so the SKI that gateways pin, never changes
    assert {s.subject_key_identifier for s in (first, renamed, later, recovered)} == {
        first.subject_key_identifier
    }


def test_signer_refuses_a_foreign_key(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    tmp_path.joinpath("mud-signing-key.pem").write_bytes(pem)
    with pytest.raises(RuntimeError, match="P-256"):
        MudSigner.load_or_create(tmp_path, "x")
