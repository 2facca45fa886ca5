"""Text embedding throughput: our exported path vs sentence-transformers, same model, same inputs.

Our path is `load_encoder(<folder>).encode_text` (all-MiniLM-L6-v2 backbone, mean
pooling, projection head): the whole list is tokenised once, batches are sorted
by length and padded only to their own longest text, inputs go to the device from
pinned memory without blocking, bf16 autocast on CUDA, and the embeddings stay on
the device until one copy at the end. The peer is
`SentenceTransformer(model_path).encode(texts, batch_size=...)` (its own length
sorting, fp32, a host copy per batch).

    .venv/bin/python bench/bench_text_embedding.py [--n 2000] [--batch-size 128] [--repeats 3]

Prints texts/s for both and the ratio (ours / peer). On a shared CPU the numbers
are noisy: compare the ratio, measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch


def make_texts(n: int, seed: int = 0) -> list[str]:
    """Product-like texts of varied length (5 to ~60 words)."""
    rng = np.random.default_rng(seed)
    words = (
        "red blue green striped dotted wooden metal glass ceramic chair table lamp mug bowl shirt "
        "dress vintage modern rustic minimalist industrial compact practical sturdy oak ships in "
        "recycled packaging loved by our customers designed with a touch of any room"
    ).split()
    return [" ".join(rng.choice(words, size=int(rng.integers(5, 60)))) for _ in range(n)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up (allocations, kernels, tokenizer caches)
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer

    from workbench.encoders import EncoderConfig, MultimodalEncoder, load_encoder, save_encoder
    from workbench.encoders.text import TextTowerConfig, default_model_path

    texts = make_texts(args.n)
    path = default_model_path()
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        # max_length 256 = sentence-transformers' max_seq_length for this model: same truncation.
        cfg = EncoderConfig(
            d=256, modalities=("text",), text=TextTowerConfig(model_path=path, max_length=256)
        )
        save_encoder(MultimodalEncoder(cfg), tmp)
        ours = load_encoder(tmp)
    device = ours.device
    peer = SentenceTransformer(path, device=str(device), local_files_only=True)
    print(
        f"device={device} n={args.n} batch_size={args.batch_size} threads={torch.get_num_threads()}"
    )

    t_ours = timed(
        lambda: ours.encode_text(texts, batch_size=args.batch_size), device, args.repeats
    )
    t_peer = timed(
        lambda: peer.encode(texts, batch_size=args.batch_size, show_progress_bar=False),
        device,
        args.repeats,
    )
    # Same backbone and pooling: check the pooled outputs agree before comparing speed.
    pooled = ours.model.text.pool_texts(texts[:64]).float().cpu()
    st = torch.as_tensor(peer.encode(texts[:64], normalize_embeddings=False))
    agree = torch.nn.functional.cosine_similarity(pooled, st.float(), dim=1).min().item()
    print(f"ours (exported encode_text): {args.n / t_ours:8.1f} texts/s  ({t_ours:.3f} s)")
    print(f"sentence-transformers encode: {args.n / t_peer:8.1f} texts/s  ({t_peer:.3f} s)")
    print(
        f"ratio ours/peer: {t_peer / t_ours:.2f}x   (min cosine of pooled outputs vs peer: {agree:.4f})"
    )


if __name__ == "__main__":
    main()
