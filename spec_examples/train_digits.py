"""Train the small CNN behind ``spec_examples/digits.onnx`` and write its data files.

The network is trained with numpy alone (im2col convolutions, hand-written backward
pass, Adam, a fixed seed) on scikit-learn's bundled 8x8 digits, then written as the
ONNX an exporter would produce in eval mode: Conv -> BatchNormalization -> Relu,
with the batch norms *not* folded, so that edgec's fusion passes have real work.

Run from anywhere (needs scikit-learn, numpy, onnx, onnxruntime; nothing is downloaded):

    python spec_examples/train_digits.py

It rewrites ``spec_examples/digits.onnx`` and ``spec_examples/data/*.npz``; a re-run
on the same machine gives the same bytes.
"""

from __future__ import annotations

import argparse
import pathlib
import zipfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = pathlib.Path(__file__).resolve().parent
SEED = 0
TEST_SAMPLES = 360
CALIBRATION_SAMPLES = 200
EPOCHS = 30
BATCH = 64
LEARNING_RATE = 3e-3
BN_EPS = 1e-5
BN_MOMENTUM = 0.1  # PyTorch convention: running = (1 - m) * running + m * batch
CHANNELS = (1, 16, 32, 32)


# ---------------------------------------------------------------------------------
# Layers: forward returns (output, cache); backward takes the cache.
# ---------------------------------------------------------------------------------


def im2col(x: np.ndarray) -> np.ndarray:
    """[N,C,H,W] -> [N*H*W, C*9] patches of a 3x3, stride 1, pad 1 convolution.

    Column order is (C, kh, kw), the order of an ONNX Conv weight reshaped to [O, C*9].
    """
    n, c, h, w = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    patches = np.empty((n, h, w, c, 3, 3), dtype=x.dtype)
    for i in range(3):
        for j in range(3):
            patches[..., i, j] = padded[:, :, i : i + h, j : j + w].transpose(0, 2, 3, 1)
    return patches.reshape(n * h * w, c * 9)


def col2im(cols: np.ndarray, shape: tuple[int, int, int, int]) -> np.ndarray:
    """Adjoint of im2col: scatter-add [N*H*W, C*9] patch gradients into [N,C,H,W]."""
    n, c, h, w = shape
    patches = cols.reshape(n, h, w, c, 3, 3)
    padded = np.zeros((n, c, h + 2, w + 2), dtype=cols.dtype)
    for i in range(3):
        for j in range(3):
            padded[:, :, i : i + h, j : j + w] += patches[..., i, j].transpose(0, 3, 1, 2)
    return padded[:, :, 1:-1, 1:-1]


def conv_forward(x, weight):
    n, _, h, w = x.shape
    cols = im2col(x)
    out = cols @ weight.reshape(weight.shape[0], -1).T
    return out.reshape(n, h, w, -1).transpose(0, 3, 1, 2), (cols, x.shape, weight)


def conv_backward(dout, cache):
    cols, x_shape, weight = cache
    dout_2d = dout.transpose(0, 2, 3, 1).reshape(-1, weight.shape[0])
    dweight = (dout_2d.T @ cols).reshape(weight.shape)
    dx = col2im(dout_2d @ weight.reshape(weight.shape[0], -1), x_shape)
    return dx, dweight


def batchnorm_train(x, gamma, beta, stats):
    mean = x.mean(axis=(0, 2, 3))
    var = x.var(axis=(0, 2, 3))
    count = x.size // x.shape[1]
    stats["mean"] = (1 - BN_MOMENTUM) * stats["mean"] + BN_MOMENTUM * mean
    stats["var"] = (1 - BN_MOMENTUM) * stats["var"] + BN_MOMENTUM * var * count / (count - 1)
    inv_std = 1.0 / np.sqrt(var + BN_EPS)
    xhat = (x - mean[:, None, None]) * inv_std[:, None, None]
    return gamma[:, None, None] * xhat + beta[:, None, None], (xhat, inv_std, gamma)


def batchnorm_eval(x, gamma, beta, stats):
    inv_std = 1.0 / np.sqrt(stats["var"] + BN_EPS)
    return gamma[:, None, None] * (x - stats["mean"][:, None, None]) * inv_std[:, None, None] + beta[:, None, None]


def batchnorm_backward(dout, cache):
    xhat, inv_std, gamma = cache
    count = dout.size // dout.shape[1]
    dgamma = (dout * xhat).sum(axis=(0, 2, 3))
    dbeta = dout.sum(axis=(0, 2, 3))
    dxhat = dout * gamma[:, None, None]
    dx = (
        inv_std[:, None, None]
        / count
        * (count * dxhat - dxhat.sum(axis=(0, 2, 3))[:, None, None] - xhat * (dxhat * xhat).sum(axis=(0, 2, 3))[:, None, None])
    )
    return dx, dgamma, dbeta


def maxpool_forward(x):
    """2x2, stride 2."""
    n, c, h, w = x.shape
    windows = x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // 2, w // 2, 4)
    arg = windows.argmax(axis=-1)
    return np.take_along_axis(windows, arg[..., None], axis=-1)[..., 0], (arg, x.shape)


def maxpool_backward(dout, cache):
    arg, (n, c, h, w) = cache
    dwindows = np.zeros((*dout.shape, 4), dtype=dout.dtype)
    np.put_along_axis(dwindows, arg[..., None], dout[..., None], axis=-1)
    return dwindows.reshape(n, c, h // 2, w // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h, w)


# ---------------------------------------------------------------------------------
# The model: 3 x (Conv -> BN -> Relu), a MaxPool after the second, Flatten, Gemm.
# ---------------------------------------------------------------------------------


def init_params(rng: np.random.Generator) -> tuple[dict, dict]:
    params, stats = {}, {}
    for layer, (cin, cout) in enumerate(zip(CHANNELS[:-1], CHANNELS[1:]), start=1):
        params[f"conv{layer}.weight"] = rng.normal(0.0, np.sqrt(2.0 / (cin * 9)), (cout, cin, 3, 3))
        params[f"bn{layer}.weight"] = np.ones(cout)
        params[f"bn{layer}.bias"] = np.zeros(cout)
        stats[f"bn{layer}"] = {"mean": np.zeros(cout), "var": np.ones(cout)}
    features = CHANNELS[-1] * 4 * 4
    bound = 1.0 / np.sqrt(features)
    params["fc.weight"] = rng.uniform(-bound, bound, (10, features))
    params["fc.bias"] = rng.uniform(-bound, bound, 10)
    return params, stats


def forward(params, stats, x, train: bool):
    caches = []
    h = x
    for layer in range(1, len(CHANNELS)):
        h, conv_cache = conv_forward(h, params[f"conv{layer}.weight"])
        gamma, beta, bn_stats = params[f"bn{layer}.weight"], params[f"bn{layer}.bias"], stats[f"bn{layer}"]
        if train:
            h, bn_cache = batchnorm_train(h, gamma, beta, bn_stats)
        else:
            h, bn_cache = batchnorm_eval(h, gamma, beta, bn_stats), None
        relu_mask = h > 0
        h = h * relu_mask
        pool_cache = None
        if layer == 2:
            h, pool_cache = maxpool_forward(h)
        caches.append((conv_cache, bn_cache, relu_mask, pool_cache))
    flat = h.reshape(h.shape[0], -1)
    logits = flat @ params["fc.weight"].T + params["fc.bias"]
    return logits, (caches, flat, h.shape)


def backward(params, dlogits, cache):
    caches, flat, pooled_shape = cache
    grads = {"fc.weight": dlogits.T @ flat, "fc.bias": dlogits.sum(axis=0)}
    dh = (dlogits @ params["fc.weight"]).reshape(pooled_shape)
    for layer in range(len(CHANNELS) - 1, 0, -1):
        conv_cache, bn_cache, relu_mask, pool_cache = caches[layer - 1]
        if pool_cache is not None:
            dh = maxpool_backward(dh, pool_cache)
        dh = dh * relu_mask
        dh, grads[f"bn{layer}.weight"], grads[f"bn{layer}.bias"] = batchnorm_backward(dh, bn_cache)
        dh, grads[f"conv{layer}.weight"] = conv_backward(dh, conv_cache)
    return grads


def softmax_cross_entropy(logits, labels):
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted)
    probs /= probs.sum(axis=1, keepdims=True)
    loss = -np.log(probs[np.arange(len(labels)), labels]).mean()
    dlogits = probs
    dlogits[np.arange(len(labels)), labels] -= 1.0
    return loss, dlogits / len(labels)


def train(x_train, y_train, rng: np.random.Generator):
    params, stats = init_params(rng)
    adam_m = {k: np.zeros_like(v) for k, v in params.items()}
    adam_v = {k: np.zeros_like(v) for k, v in params.items()}
    beta1, beta2, step = 0.9, 0.999, 0
    steps_per_epoch = int(np.ceil(len(x_train) / BATCH))
    total_steps = EPOCHS * steps_per_epoch
    for epoch in range(EPOCHS):
        order = rng.permutation(len(x_train))
        losses = []
        for start in range(0, len(order), BATCH):
            batch = order[start : start + BATCH]
            if len(batch) < 2:  # batch statistics need more than one sample
                continue
            logits, cache = forward(params, stats, x_train[batch], train=True)
            loss, dlogits = softmax_cross_entropy(logits, y_train[batch])
            losses.append(loss)
            grads = backward(params, dlogits, cache)
            step += 1
            # Cosine decay keeps the last epochs quiet, so the running statistics
            # describe the final weights.
            lr = LEARNING_RATE * 0.5 * (1 + np.cos(np.pi * step / total_steps))
            for name, grad in grads.items():
                adam_m[name] = beta1 * adam_m[name] + (1 - beta1) * grad
                adam_v[name] = beta2 * adam_v[name] + (1 - beta2) * grad * grad
                m_hat = adam_m[name] / (1 - beta1**step)
                v_hat = adam_v[name] / (1 - beta2**step)
                params[name] -= lr * m_hat / (np.sqrt(v_hat) + 1e-8)
        if epoch % 5 == 4 or epoch == EPOCHS - 1:
            print(f"epoch {epoch + 1:2d}  loss {np.mean(losses):.4f}")
    # A few passes in train mode with no weight updates let the running statistics
    # settle on the final weights, as a last BN-recalibration epoch would.
    for start in range(0, len(x_train), BATCH):
        batch = np.arange(start, min(start + BATCH, len(x_train)))
        if len(batch) >= 2:
            forward(params, stats, x_train[batch], train=True)
    return params, stats


# ---------------------------------------------------------------------------------
# ONNX, written the way torch.onnx.export writes an eval-mode model at opset 17.
# ---------------------------------------------------------------------------------


def to_onnx(params, stats, test_accuracy: float) -> onnx.ModelProto:
    initializers = [numpy_helper.from_array(np.asarray(v, dtype=np.float32), name) for name, v in params.items()]
    nodes = []
    h = "input"
    for layer in range(1, len(CHANNELS)):
        for key in ("mean", "var"):
            name = f"bn{layer}.running_{key}"
            initializers.append(numpy_helper.from_array(stats[f"bn{layer}"][key].astype(np.float32), name))
        nodes.append(
            helper.make_node(
                "Conv",
                [h, f"conv{layer}.weight"],
                [f"/conv{layer}/Conv_output_0"],
                name=f"/conv{layer}/Conv",
                dilations=[1, 1],
                group=1,
                kernel_shape=[3, 3],
                pads=[1, 1, 1, 1],
                strides=[1, 1],
            )
        )
        nodes.append(
            helper.make_node(
                "BatchNormalization",
                [
                    f"/conv{layer}/Conv_output_0",
                    f"bn{layer}.weight",
                    f"bn{layer}.bias",
                    f"bn{layer}.running_mean",
                    f"bn{layer}.running_var",
                ],
                [f"/bn{layer}/BatchNormalization_output_0"],
                name=f"/bn{layer}/BatchNormalization",
                epsilon=BN_EPS,
                momentum=1.0 - BN_MOMENTUM,  # ONNX's momentum weighs the old running value
            )
        )
        nodes.append(
            helper.make_node(
                "Relu", [f"/bn{layer}/BatchNormalization_output_0"], [f"/relu{layer}/Relu_output_0"], name=f"/relu{layer}/Relu"
            )
        )
        h = f"/relu{layer}/Relu_output_0"
        if layer == 2:
            nodes.append(
                helper.make_node(
                    "MaxPool", [h], ["/pool/MaxPool_output_0"], name="/pool/MaxPool", kernel_shape=[2, 2], pads=[0, 0, 0, 0], strides=[2, 2]
                )
            )
            h = "/pool/MaxPool_output_0"
    nodes.append(helper.make_node("Flatten", [h], ["/Flatten_output_0"], name="/Flatten", axis=1))
    nodes.append(
        helper.make_node(
            "Gemm", ["/Flatten_output_0", "fc.weight", "fc.bias"], ["logits"], name="/fc/Gemm", alpha=1.0, beta=1.0, transB=1
        )
    )
    graph = helper.make_graph(
        nodes,
        "digits_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17)],
        producer_name="edgec spec_examples/train_digits.py",
        producer_version="1",
        doc_string=(
            "Small CNN (3x Conv-BatchNormalization-Relu, MaxPool, Gemm) trained with numpy on "
            f"scikit-learn's 8x8 digits (pixels / 16), seed {SEED}; held-out accuracy "
            f"{test_accuracy:.4f} on spec_examples/data/digits.npz. Regenerate with "
            "`python spec_examples/train_digits.py`."
        ),
    )
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def split(rng: np.random.Generator):
    """A stratified held-out split: the same share of every class goes to the test set."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float64)[:, None, :, :]
    y = digits.target.astype(np.int64)
    test_idx = []
    for label in range(10):
        members = rng.permutation(np.flatnonzero(y == label))
        test_idx.extend(members[: round(TEST_SAMPLES * len(members) / len(y))])
    test_idx = np.sort(np.asarray(test_idx))
    train_idx = np.setdiff1d(np.arange(len(y)), test_idx)
    return x[train_idx], y[train_idx], x[test_idx], y[test_idx]


def save_npz(path: pathlib.Path, **arrays: np.ndarray) -> None:
    """Like ``np.savez``, but with fixed zip timestamps, so a re-run rewrites the same bytes."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for key, array in arrays.items():
            with archive.open(zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0)), "w") as member:
                np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=pathlib.Path, default=HERE, help="where digits.onnx and data/ go")
    args = parser.parse_args()

    rng = np.random.default_rng(SEED)
    x_train, y_train, x_test, y_test = split(rng)
    print(f"train {len(y_train)} samples, test {len(y_test)} samples")
    params, stats = train(x_train, y_train, rng)

    def accuracy(x, y):
        logits, _ = forward(params, stats, x, train=False)
        return float((logits.argmax(axis=1) == y).mean())

    train_acc, test_acc = accuracy(x_train, y_train), accuracy(x_test, y_test)
    print(f"numpy: train accuracy {train_acc:.4f}, test accuracy {test_acc:.4f}")

    model = to_onnx(params, stats, test_acc)
    data_dir = args.out_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = args.out_dir / "digits.onnx"
    onnx.save(model, onnx_path)
    x_test32 = x_test.astype(np.float32)
    calibration = x_train[rng.choice(len(x_train), CALIBRATION_SAMPLES, replace=False)].astype(np.float32)
    save_npz(data_dir / "digits.npz", input=x_test32)
    save_npz(data_dir / "digits-labels.npz", labels=y_test)
    save_npz(data_dir / "digits-calibration.npz", input=calibration)

    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (ort_logits,) = session.run(["logits"], {"input": x_test32})
    float32_params = {k: v.astype(np.float32) for k, v in params.items()}
    float32_stats = {k: {s: v.astype(np.float32) for s, v in d.items()} for k, d in stats.items()}
    numpy_logits, _ = forward(float32_params, float32_stats, x_test32, train=False)
    max_diff = float(np.abs(ort_logits - numpy_logits).max())
    ort_acc = float((ort_logits.argmax(axis=1) == y_test).mean())
    print(f"onnxruntime vs numpy forward: max abs diff {max_diff:.2e}")
    print(f"onnxruntime: test accuracy {ort_acc:.4f} on {len(y_test)} held-out samples")
    print(f"wrote {onnx_path} and {data_dir}/digits{{,-labels,-calibration}}.npz")
    if max_diff >= 1e-4:
        raise SystemExit(f"onnxruntime disagrees with the numpy forward pass (max abs diff {max_diff:.2e})")
    if ort_acc < 0.95:
        raise SystemExit(f"test accuracy {ort_acc:.4f} is below the 95% the examples rely on")


if __name__ == "__main__":
    main()
