"""featviz against tf-keras-vis (shared/peers/tf-keras-vis) on the same Keras weights: per
network, the peer's ``run.sh`` and featviz's ``run_featviz.py`` back to back on the same
channels, steps and size, then both folders of PNGs through the peer's common scorer
(``score.py``, TensorFlow, the same weights file). Prints JSON: seconds per channel of each
(featviz's with and without compiling), the ratio, each channel's activation before and after
the layer's ReLU, and the load average before each run.

    python benchmarks/bench_vs_tf_keras_vis.py [--networks VGG16,SmallCNN] [--channels 0-3]
        [--steps 64] [--size 128] [--models /tmp/tfkv-models] [--peer-venv /tmp/tfkv-peer]
        [--out /tmp/featviz-vs-tfkv] [--rounds 1]

Once before: ``shared/peers/tf-keras-vis/setup.sh`` (the peer's venv) and
``.venv/bin/python shared/peers/tf-keras-vis/make_models.py /tmp/tfkv-models`` (the weights).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from featviz.channels import parse_channels

PEER = Path(__file__).resolve().parents[1].parent / "shared" / "peers" / "tf-keras-vis"
LAYERS = {"VGG16": "block5_conv3", "SmallCNN": "conv3"}
WEIGHTS = {"VGG16": "vgg16_seed0_notop.h5", "SmallCNN": "smallcnn_seed0.h5"}


def last_json(command: list[str], env: dict | None = None) -> dict:
    """Run ``command``; its last line of output, read as JSON."""
    run = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def one_round(network: str, channels: list[int], args, out: Path) -> dict:
    """Both tools once on ``network``, back to back, each into its own folder."""
    layer, weights = LAYERS[network], str(args.models / WEIGHTS[network])
    job = [network, layer, str(channels[0]), str(len(channels)), str(args.steps),
           str(args.size)]
    loads = {"tf_keras_vis": os.getloadavg()}
    theirs = last_json(["bash", str(PEER / "run.sh"), *job, str(out / "tfkv"),
                        str(args.peer_venv), "--weights", weights])
    loads["featviz"] = os.getloadavg()
    ours = last_json([sys.executable, str(PEER / "run_featviz.py"), *job, str(out / "featviz"),
                      "--weights", weights], env={**os.environ, "KERAS_BACKEND": "jax"})
    return {"load_average_before": loads,
            "tf_keras_vis_s_per_channel": theirs["s_per_channel"],
            "featviz_s_per_channel": ours["s_per_channel"],
            "featviz_compute_s_per_channel": ours["compute_s_per_channel"],
            "featviz_compile_s": ours["timing"].get("compile")}


def scores(network: str, args, out: Path) -> dict:
    """The common scorer's activations of both tools' PNGs."""
    command = [str(args.peer_venv / "bin" / "python"), str(PEER / "score.py"), network,
               LAYERS[network], "--weights", str(args.models / WEIGHTS[network]),
               str(out / "tfkv"), str(out / "featviz")]
    run = subprocess.run(command, capture_output=True, text=True, check=True)
    rows = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    named = {Path(r["dir"]).name: r for r in rows}
    return {tool: {k: named[folder][k] for k in ("channels", "activation", "activation_post",
                                                 "mean_activation", "mean_activation_post")}
            for tool, folder in (("tf_keras_vis", "tfkv"), ("featviz", "featviz"))}


def compare(network: str, channels: list[int], args) -> dict:
    """``args.rounds`` rounds on one network, their medians, and the scorer's activations."""
    out = args.out / network
    rounds = [one_round(network, channels, args, out) for _ in range(args.rounds)]
    median = {k: statistics.median(r[k] for r in rounds)
              for k in ("tf_keras_vis_s_per_channel", "featviz_s_per_channel",
                        "featviz_compute_s_per_channel")}
    return {"network": network, "layer": LAYERS[network], "rounds": rounds, "median": median,
            "featviz_over_tf_keras_vis": round(median["featviz_s_per_channel"]
                                               / median["tf_keras_vis_s_per_channel"], 3),
            "featviz_compute_over_tf_keras_vis": round(
                median["featviz_compute_s_per_channel"]
                / median["tf_keras_vis_s_per_channel"], 3),
            "activations": scores(network, args, out)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", default="VGG16,SmallCNN")
    ap.add_argument("--channels", default="0-3")
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--models", type=Path, default=Path("/tmp/tfkv-models"))
    ap.add_argument("--peer-venv", type=Path, default=Path("/tmp/tfkv-peer"))
    ap.add_argument("--out", type=Path, default=Path("/tmp/featviz-vs-tfkv"))
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    channels = parse_channels(args.channels, 1 << 16)
    if channels != list(range(channels[0], channels[0] + len(channels))):
        raise SystemExit("--channels: the peer renders a run of consecutive channels (say 0-3)")
    print(json.dumps({"cores": os.cpu_count(), "job": {k: str(v) for k, v in vars(args).items()},
                      "networks": [compare(n, channels, args) for n in args.networks.split(",")],
                      "load_average_at_end": os.getloadavg()}, indent=1))


if __name__ == "__main__":
    main()
