"""Issue 16 §2: an edited fingerprint file never proves ownership (replayed through the CLI).

Each case hands ``trustlab fingerprint verify`` (or ``inspect``) a fingerprint file a hostile or careless user
changed, or a flag that would turn chance into evidence, against a scripted server that answers whatever the edited
file asks for. Before the fix, several of these printed ``OWNED 16/16``; now each is exit 2 with one ``error:`` line
naming the file (or flag) and the field, one ``hint:`` line, no traceback and no OWNED verdict. Two controls: an
untouched file against a model that never saw it is ``not owned``, and a more conservative ``--null-p`` is accepted
but marked in the verdict line and the results.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from trustlab.fingerprint.fpset import Fingerprint, FingerprintSet, tokenizer_info
from trustlab.fingerprint.secret import commitment
from trustlab.models.llm.fake_server import FakeServer

from .harness import assert_refused, run_cli

SECRET = bytes(range(32))
N = 16

CASES = [
    "fp-edited-response-text",
    "fp-edited-key-text",
    "fp-edited-tokenizer-block",
    "fp-edited-candidates",
    "fp-edited-null-heuristic",
    "fp-null-p-edited-and-redigested",
    "fp-candidates-edited-and-redigested",
    "fp-lenient-match-on-edited-file",
    "fp-null-p-flag-below-proven",
    "fp-empty-set",
    "fp-truncated-json",
    "fp-garbage-bytes",
    "fp-version-1-digest",
    "fp-future-version",
    "fp-inspect-edited-file",
    "fp-assignment-edited",
]


def build_set(tok, strategy="perinucleus"):
    """16 fingerprints with tiny-llama's tokenizer; perinucleus ones carry k = 3 candidates holding the response."""
    fps = []
    for i in range(N):
        # the response's first token is "r": a whitespace-only first token (" ") shares outputs with any other
        # candidate under text matching, so its key's null would be 2/3 (stats.key_nulls)
        key, resp = f"integrity key sentence number {i} goes here", f"r{i}"
        rid = tuple(tok.encode(resp, add_special_tokens=False))
        cands = (rid[0], rid[0] + 1, rid[0] + 2) if strategy == "perinucleus" else None
        fps.append(Fingerprint(id=i, key_text=key, key_ids=tuple(tok.encode(key, add_special_tokens=False)),
                               response_text=resp, response_ids=rid, base_prob=0.01, candidates=cands,
                               boundary_rank=5 if cands else None))
    params = {"response_length": max(len(f.response_ids) for f in fps), "prompt_format": "raw",
              "nucleus_t": 0.8, "nucleus_k": 3}
    return FingerprintSet.create(strategy=strategy, params=params, base_model={"ref": "test"}, key_model=None,
                                 tokenizer=tokenizer_info(tok), secret_commitment=commitment(SECRET),
                                 null_p=1 / 3, null_p_heuristic=strategy == "english", fingerprints=fps)


@pytest.fixture(scope="module")
def good(tiny_lm):
    return build_set(tiny_lm[1]).to_dict()


@pytest.fixture(scope="module")
def english(tiny_lm):
    return build_set(tiny_lm[1], strategy="english").to_dict()


def redigest(d: dict) -> dict:
    """What a forger who recomputes the digest writes: sha256 of the canonical JSON of everything but the digests
    and the creation time."""
    body = {k: v for k, v in d.items() if k not in ("set_digest", "field_digests", "created")}
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()
    return {**{k: v for k, v in d.items() if k != "field_digests"}, "set_digest": hashlib.sha256(blob).hexdigest()}


def edit_all(d: dict, name: str, value) -> dict:
    d = json.loads(json.dumps(d))
    for i, fp in enumerate(d["fingerprints"]):
        fp[name] = value(i, fp) if callable(value) else value
    return d


def serving(d: dict, text=None):
    """A suspect that answers every key of ``d`` with its response (or with ``text`` for every prompt)."""
    table = {fp["key_text"]: fp["response_text"] for fp in d["fingerprints"]} if isinstance(d, dict) else {}
    return FakeServer(models=("suspect",), check_model=True,
                      answer=(lambda p: text) if text is not None else (lambda p: table.get(p, " other")))


def one_hit(d: dict):
    """A suspect that matches one key of 16: chance level for p0 = 1/3."""
    first = d["fingerprints"][0]
    return FakeServer(models=("suspect",), check_model=True,
                      answer=lambda p: first["response_text"] if p == first["key_text"] else " nothing")


def _case(name, good, english, path):
    """(file content: dict | bytes, server, extra flags, expected words in the error)."""
    if name == "fp-edited-response-text":  # every response -> "the", digest left alone
        d = edit_all(good, "response_text", "the")
        return d, serving(d, " the"), [], ["response_text"]
    if name == "fp-edited-key-text":  # keys swapped for prompts the suspect answers "right"
        d = edit_all(good, "key_text", lambda i, fp: f"any prompt {i}")
        return d, serving(d), [], ["key_text"]
    if name == "fp-edited-tokenizer-block":  # claim the suspect's tokenizer to pass the tokenizer check
        d = json.loads(json.dumps(good))
        d["tokenizer"] = {**d["tokenizer"], "vocab_sha256": "0" * 64, "name": "suspect"}
        return d, serving(d), [], ["tokenizer"]
    if name == "fp-edited-candidates":
        d = edit_all(good, "candidates", [1, 2, 3])
        return d, serving(d), [], ["candidates"]
    if name == "fp-edited-null-heuristic":  # hide the "heuristic p0" mark of strategy english
        d = dict(english, null_p_heuristic=False)
        return d, serving(d), [], ["null_p_heuristic"]
    if name == "fp-null-p-edited-and-redigested":  # a consistent digest, but not the proven null 1/k
        d = redigest(dict(good, null_p=1e-6))
        return d, one_hit(d), [], ["null_p"]
    if name == "fp-candidates-edited-and-redigested":  # the response is no longer one of the k candidates
        d = redigest(edit_all(good, "candidates", lambda i, fp: [t + 100 for t in fp["candidates"]]))
        return d, serving(d), [], ["candidates"]
    if name == "fp-lenient-match-on-edited-file":  # lenient "The!" passes for "the"
        d = edit_all(good, "response_text", "the")
        return d, serving(d, "The!"), ["--match", "lenient"], ["response_text"]
    if name == "fp-null-p-flag-below-proven":  # an untouched file; 1 chance hit of 16 must not be OWNED
        return good, one_hit(good), ["--null-p", "1e-6"], ["null_p", "1e-06", "1/3"]
    if name == "fp-empty-set":
        return dict(good, fingerprints=[]), serving(good), [], ["no fingerprints"]
    if name == "fp-truncated-json":
        text = json.dumps(good)
        return text[: len(text) // 2].encode(), serving(good), [], ["not valid JSON"]
    if name == "fp-garbage-bytes":
        return b"\xff\xfe\x00garbage\x80" * 10, serving(good), [], []
    if name == "fp-version-1-digest":  # a file from before the full-content digest, with its (valid) v1 digest
        fps = FingerprintSet.from_dict(good)
        d = dict(good, version=1, set_digest=fps.legacy_digest())
        d.pop("field_digests", None)
        return d, serving(d), [], ["version 1"]
    if name == "fp-future-version":
        d = redigest(dict(good, version=99))
        return d, serving(d), [], ["version"]
    if name == "fp-inspect-edited-file":
        return edit_all(good, "response_text", "the"), None, [], ["response_text"]
    raise AssertionError(name)


@pytest.mark.parametrize("name", [c for c in CASES if c != "fp-assignment-edited"])
def test_edited_fingerprint_file_never_proves_ownership(name, good, english, tmp_path, capsys):
    path = tmp_path / "fp.json"
    content, server, flags, words = _case(name, good, english, path)
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content, indent=1).encode())
    if server is None:
        got = run_cli(capsys, "fingerprint", "inspect", path, "--json")
        assert '"digest_holds": false' in got.out, got.out
    else:
        with server as srv:
            got = run_cli(capsys, "fingerprint", "verify", "--fingerprints", path, "--endpoint", srv.url,
                          "--served-model", "suspect", "--max-retries", "0", "--out", tmp_path / "run", *flags)
    assert "OWNED" not in got.out + got.err, got.out + got.err
    named = [] if "--null-p" in flags else [str(path)]
    assert_refused(got, 2, *named, *words)
    if name == "fp-version-1-digest":
        assert "trustlab fingerprint generate" in got.hints[0]
    assert not (tmp_path / "run" / "verify_result.json").exists()


def test_untouched_file_proves_ownership_and_a_stranger_is_not_owned(good, tmp_path, capsys):
    """Controls: the same server and flags on the untouched file are OWNED; the never-fingerprinted tiny-llama
    (exact and lenient matching, the file's own tokenizer) is not."""
    path = tmp_path / "fp.json"
    path.write_text(json.dumps(good))
    with serving(good) as srv:
        got = run_cli(capsys, "fingerprint", "verify", "--fingerprints", path, "--endpoint", srv.url,
                      "--served-model", "suspect", "--out", tmp_path / "owner")
    assert got.code == 0 and got.out.startswith(f"OWNED {N}/{N} matched"), got.out + got.err
    for match in ("exact", "lenient"):
        got = run_cli(capsys, "fingerprint", "verify", "--fingerprints", path, "--model", "tiny-llama",
                      "--match", match, "--out", tmp_path / f"base-{match}")
        assert got.code == 0 and got.out.startswith("not owned 0/16"), got.out + got.err


def test_conservative_null_p_is_accepted_and_marked(good, tmp_path, capsys):
    """--null-p above the proven 1/k only makes the test stricter: accepted, marked in the line and the results."""
    path = tmp_path / "fp.json"
    path.write_text(json.dumps(good))
    with serving(good) as srv:
        got = run_cli(capsys, "fingerprint", "verify", "--fingerprints", path, "--endpoint", srv.url,
                      "--served-model", "suspect", "--null-p", "0.5", "--out", tmp_path / "run")
    assert got.code == 0, got.out + got.err
    line = got.out.splitlines()[0]
    assert line.startswith(f"OWNED {N}/{N}") and "p0=1/2" in line
    assert "[p0 overridden by user: 0.5 (proven 1/3)]" in line
    res = json.loads((tmp_path / "run" / "verify_result.json").read_text())
    assert res["p0"] == 0.5 and res["p0_proven"] == pytest.approx(1 / 3)
    assert res["p0_override"] == "p0 overridden by user: 0.5 (proven 1/3)"
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["verify"][0]["p0_override"] == res["p0_override"]


def test_edited_assignment_never_names_a_copy(tmp_path, capsys):
    """fp-assignment-edited: moving the suspect's hits into copy 0's subset of an assignment file would frame copy 0;
    the file's assignment_digest refuses it (exit 2 naming the file), while the untouched file still identifies."""
    secret, path = tmp_path / "owner.secret", tmp_path / "a.json"
    secret.write_text(SECRET.hex())
    secret.chmod(0o600)
    got = run_cli(capsys, "fingerprint", "assign", "--secret", secret, "--copies", "8", "--pool", "64", "--out", path)
    assert got.code == 0, got.err
    d = json.loads(path.read_text())
    hits = [1 if f in d["fingerprints_of_copy"][3] else 0 for f in range(64)]  # the host is copy 3
    (tmp_path / "hits.json").write_text(json.dumps(hits))
    got = run_cli(capsys, "fingerprint", "identify", "--assignment", path, "--hits", tmp_path / "hits.json")
    assert got.code == 0 and "best match: copy 3" in got.out, got.out + got.err
    d["fingerprints_of_copy"][0] = d["fingerprints_of_copy"][3]  # frame copy 0
    path.write_text(json.dumps(d))
    got = run_cli(capsys, "fingerprint", "identify", "--assignment", path, "--hits", tmp_path / "hits.json")
    assert "best match" not in got.out
    assert_refused(got, 2, str(path), "assignment_digest")
