"""The two ways a pack's step maps its models: vmapped into batched kernels (GPUs) and looped
inside the compiled step (CPU). Forced on CPU, the vectorized path trains a pack of 4 to the
losses of the looped one, on 1 device and on 2 (two groups of two models)."""

import json
import os
import subprocess
import sys

import pytest

SCRIPT = """
import json
from unittest import mock
from jaxscale.backend import configure, pack_mesh
configure("cpu")
from jaxscale.config import EvalConfig, RunSpec, TrainConfig
from jaxscale.counting import ModelShape
from jaxscale.data import load_corpus
from jaxscale.train import step, train_pack
corpus = load_corpus("synthetic:order=1,symbols=16,tokens=100000", progress=False)
specs = [RunSpec(f"p{i}", ModelShape(1, 16, 2), 8192, i, lr)
         for i, lr in enumerate([3e-3, 1e-2, 3e-2, 1e-1])]
# accum=2: the micro-batch scan runs inside the vmap too
kw = dict(context=16, train=TrainConfig(batch_size=16, accum=2, evals=2),
          eval_cfg=EvalConfig(tokens=2048))
out = {}
for vectorize in (False, True):
    with mock.patch.object(step, "vectorize_packs", lambda: vectorize):
        fn = step.make_pack_steps(None, kw["train"], pack_mesh(4, 16), 16)
        assert fn.keywords["vectorize"] is vectorize
        outs = train_pack(specs, corpus, **kw)
    out[str(vectorize)] = [[o.loss, o.train_loss, *[v for _, v in o.curve]] for o in outs]
out["devices"] = outs[0].devices
print(json.dumps(out))
"""


@pytest.mark.parametrize("devices", [1, 2])
def test_vectorized_pack_matches_the_looped_pack(devices: int) -> None:
    # micro-batches of 64 tokens: small enough that these tiny batches split over every device
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
           "JAXSCALE_CPU_MICRO_TOKENS": "64"}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["devices"] == devices
    looped, vectorized = got["False"], got["True"]
    assert len({tuple(x) for x in looped}) == 4  # four different models
    for a, b in zip(looped, vectorized, strict=True):
        assert b == pytest.approx(a, abs=1e-4)
