"""Sharding over simulated devices and several processes (each test runs in a fresh Python), on
the zoo's ``tiny`` model (seeded random weights): what is tested is the splitting and merging,
not the network."""
import os
import subprocess
import sys
import textwrap

SHARDED = textwrap.dedent("""
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import jax, numpy as np
    import featviz
    from featviz import objectives as obj
    assert len(jax.devices()) == 4

    model = featviz.load_model("tiny")
    chans = [0, 1, 2, 3, 4, 5]  # not a multiple of 4: exercises the padding
    objs = [obj.channel("conv2", c) for c in chans]
    keys = featviz.channel_keys(0, chans)
    single = featviz.Renderer(model, size=32, steps=10)
    one = single(objs, keys)
    four = featviz.Renderer(model, size=32, steps=10, devices=jax.devices())(objs, keys)
    # what the README promises: on the CPU the images do not depend on how the batch is split,
    # over devices (here 2 per device) or into chunks
    pairs = [single(objs[i:i + 2], keys[i:i + 2]) for i in range(0, 6, 2)]
    np.testing.assert_array_equal(four.images, np.concatenate([p.images for p in pairs]))
    np.testing.assert_array_equal(four.images, one.images)
    np.testing.assert_array_equal(four.final, one.final)
    print("OK", four.images.shape)
""")


def test_sharded_over_four_devices_equals_one_device():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    run = subprocess.run([sys.executable, "-c", SHARDED], capture_output=True, text=True, env=env,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "OK (6, 32, 32, 3)" in run.stdout


def test_lite0_from_the_command_line_same_images_on_one_or_four_devices(tmp_path):
    """EfficientNet-Lite0 through the CLI: 8 channels in chunks of 2 on one CPU device, and in
    one chunk of 8 on four simulated devices (two images each), give identical PNGs."""
    import numpy as np
    from PIL import Image

    job = [sys.executable, "-m", "featviz", "render", "--layer", "blocks_8", "--channels", "0-7",
           "--steps", "32", "--size", "64", "--seed", "3", "--quiet"]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    runs = {"one": (["--chunk", "2"], env),
            "four": (["--chunk", "8", "--devices", "all"],
                     dict(env, XLA_FLAGS="--xla_force_host_platform_device_count=4"))}
    for name, (options, run_env) in runs.items():
        done = subprocess.run(job + options + ["--out", str(tmp_path / name)], env=run_env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    for c in range(8):
        one, four = (np.asarray(Image.open(tmp_path / name / f"blocks_8_{c}.png"))
                     for name in runs)
        np.testing.assert_array_equal(one, four, err_msg=f"channel {c}")


def test_two_processes_over_loopback_render_one_atlas(tmp_path, free_port):
    """Two processes join through jax.distributed, each renders its share of the channels, and
    process 0 writes the merged records and the atlas; the images equal a one-process run."""
    import json
    from pathlib import Path

    import numpy as np
    from PIL import Image

    featviz_cmd = [sys.executable, "-m", "featviz"]
    common = ["atlas", "--model", "tiny", "--layer", "conv2", "--channels", "0-4", "--steps", "4",
              "--size", "32", "--quiet"]
    procs = [subprocess.Popen(featviz_cmd + common + [
        "--out", str(tmp_path / "multi" / "atlas.png"), "--distributed", f"127.0.0.1:{free_port}",
        "--num-processes", "2", "--process-id", str(i)], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-1500:] for o in outs]
    multi = tmp_path / "multi"
    records = json.loads((multi / "atlas_channels" / "results.json").read_text())
    assert sorted(records["channels"], key=int) == ["0", "1", "2", "3", "4"]
    assert (multi / "atlas.png").exists()
    parts = sorted(p.name for p in (multi / "atlas_channels").glob("results.p*.json"))
    assert parts == ["results.p0.json", "results.p1.json"]

    single = subprocess.run(featviz_cmd + common + ["--out", str(tmp_path / "one" / "atlas.png")],
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-1500:]
    for c in range(5):
        a = np.asarray(Image.open(multi / "atlas_channels" / f"conv2_{c}.png"), np.int16)
        b = np.asarray(Image.open(Path(tmp_path / "one" / "atlas_channels" / f"conv2_{c}.png")),
                       np.int16)
        assert np.abs(a - b).max() <= 1
