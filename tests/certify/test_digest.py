"""Issue 17: certify stamps its certificate files with the one weights digest of trustlab.models.identity (vfl
records the same digest of its party and top models), and a certificate file stamped with certify's former
16-hex-digit digest is refused with a message that says so."""

import json

import numpy as np
import pytest
import torch

from trustlab.certify.records import open_records, stamped_records
from trustlab.models.identity import weights_digest
from trustlab.runtime.errors import ConfigError


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))


def test_certificates_record_the_identity_digest():
    from trustlab.certify.certifiers import bounds_settings
    from trustlab.certify.config import BoundsConfig

    net = _net()
    x, y = np.zeros((2, 1, 2, 2), np.float32), np.zeros(2, np.int64)
    digest = bounds_settings(net, x, y, BoundsConfig(), "ibp")["model"]
    assert digest == weights_digest(net) and len(digest) == 64
    with torch.no_grad():
        net[1].bias += 1
    assert bounds_settings(net, x, y, BoundsConfig(), "ibp")["model"] != digest


def test_a_certificate_file_with_the_old_digest_is_refused_naming_it(tmp_path):
    net = _net()
    settings = {"certifier": "ibp", "model": weights_digest(net), "inputs": "0" * 16}
    old = dict(settings, model="0123456789abcdef")  # certify's former model digest: 16 hex digits
    path = tmp_path / "ibp" / "clean.jsonl"
    path.parent.mkdir()
    from trustlab.runtime.records import header

    path.write_text(json.dumps(header(old)) + "\n" + json.dumps({"idx": 0, "radius": 0.1}) + "\n")
    for read in (lambda: open_records(path, settings), lambda: stamped_records(path, settings)):
        with pytest.raises(ConfigError, match="older trustlab") as exc:
            read()
        assert "--no-resume" in exc.value.hint
    assert path.read_text().count("\n") == 2  # refused, untouched
    assert open_records(path, settings, resume=False) == []  # --no-resume starts it afresh
