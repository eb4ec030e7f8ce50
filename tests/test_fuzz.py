"""Random corruption of real stats files: only morphml's own errors may escape."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from morphml.exceptions import MorphmlError
from morphml.io import parse_stats_bytes
from tests.conftest import SHARED_DATA

REAL = sorted(
    p for p in SHARED_DATA.rglob("*.stats") if p.is_file() and not p.name.endswith("curv.stats")
)
CONTENT = {p: p.read_bytes() for p in REAL}


@st.composite
def corrupted(draw: st.DrawFn) -> tuple[str, bytes]:
    path = draw(st.sampled_from(REAL))
    data = bytearray(CONTENT[path])
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["delete", "insert", "replace", "truncate", "dupline", "swap"]))
        n = len(data)
        if n == 0:
            break
        i = draw(st.integers(0, n - 1))
        if op == "delete":
            del data[i : i + draw(st.integers(1, 64))]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "replace":
            chunk = draw(
                st.sampled_from([b"x", b" ", b"\n", b",", b"#", b"-nan", b"1e999", b"\xff"])
            )
            data[i : i + len(chunk)] = chunk
        elif op == "truncate":
            del data[i:]
        else:
            lines = bytes(data).split(b"\n")
            a = draw(st.integers(0, len(lines) - 1))
            b = draw(st.integers(0, len(lines) - 1))
            if op == "dupline":
                lines.insert(b, lines[a])
            else:
                lines[a], lines[b] = lines[b], lines[a]
            data = bytearray(b"\n".join(lines))
    return path.name, bytes(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(corrupted())
def test_only_morphml_errors_escape(case: tuple[str, bytes]) -> None:
    name, data = case
    try:
        sf = parse_stats_bytes(data, name)
    except MorphmlError as err:
        assert name in str(err)
        return
    sf.features()
