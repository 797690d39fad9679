"""What the GPU's decoders do on their own, without a server: the ceilings the fleet is measured against.

    python -m bench.gpu.decode_ceiling clips --out DIR            (anywhere PyAV is: encode test clips)
    python -m bench.gpu.decode_ceiling measure --clips DIR --out FILE [--jpeg-batches 1 64 128 256]

`clips`: 1080p30 H.264 and H.265 access units (Annex B, in-band parameter sets, GOP 30, 4 Mbit/s)
from a moving synthetic scene, encoded with PyAV's libx264/libx265 (the H200 has no NVENC), saved
as `clip-CODEC.bin` with the access units' sizes in `clip-CODEC.json`.
`measure`: 1080p JPEGs (quality 90) through nvJPEG with torchvision's batched `decode_jpeg`, per
batch size and with two decoding threads; the whole image path in one process (decode, preprocess,
ResNet-50, top-k) per batch size; the clips through NVDEC (`models.video_decode.NvDecDecoder`, the
camera model's decoder) with 1 to N sessions in threads. Rates are wall-clock over whole calls with
the device synchronized, medians of `--repeat`; an empty list skips that part.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import threading
import time
from pathlib import Path

import numpy as np

CODECS = {"h264": "libx264", "hevc": "libx265"}


def encode_clip(codec: str, frames: int = 90, fps: int = 30) -> list[bytes]:
    import av

    from bench.models.load import camera_picture

    scene = camera_picture(1080, 1920 + 4 * frames, seed=3)
    container = av.open(io.BytesIO(), mode="w", format="null")
    stream = container.add_stream(CODECS[codec], rate=fps)
    stream.width, stream.height, stream.pix_fmt = 1920, 1080, "yuv420p"
    stream.bit_rate = 4_000_000
    stream.codec_context.gop_size = 30
    stream.options = {"preset": "veryfast", "bf": "0"} if codec == "h264" else {"preset": "veryfast", "x265-params": "bframes=0:log-level=error"}
    units = []
    for index in range(frames):
        picture = np.ascontiguousarray(scene[:, 4 * index : 4 * index + 1920])
        for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
            units.append(bytes(packet))
    units += [bytes(packet) for packet in stream.encode(None)]
    container.close()
    return units


def write_clips(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for codec in CODECS:
        units = encode_clip(codec)
        (out / f"clip-{codec}.bin").write_bytes(b"".join(units))
        (out / f"clip-{codec}.json").write_text(json.dumps([len(u) for u in units]))
        print(f"{codec}: {len(units)} access units, {sum(map(len, units)) / 1e6:.1f} MB")


def read_clip(folder: Path, codec: str) -> list[bytes]:
    data = (folder / f"clip-{codec}.bin").read_bytes()
    units, offset = [], 0
    for size in json.loads((folder / f"clip-{codec}.json").read_text()):
        units.append(data[offset : offset + size])
        offset += size
    return units


def jpeg_figures(batches: list[int], repeat: int) -> dict:
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    from bench.models.load import camera_picture, jpeg

    images = [torch.frombuffer(bytearray(jpeg(camera_picture(1080, 1920, seed))), dtype=torch.uint8) for seed in range(16)]
    out = {"jpeg_bytes": statistics.median(len(i) for i in images), "batches": {}, "two_threads": {}}

    def rate(batch: int, calls: int) -> float:
        work = [images[i % len(images)] for i in range(batch)]
        torch.cuda.synchronize()
        began = time.perf_counter()
        for _ in range(calls):
            decode_jpeg(work, mode=ImageReadMode.RGB, device="cuda")
        torch.cuda.synchronize()
        return batch * calls / (time.perf_counter() - began)

    for batch in batches:
        rate(batch, 2)
        calls = max(2, 512 // batch)
        out["batches"][batch] = round(statistics.median(rate(batch, calls) for _ in range(repeat)))
    for batch in (64, 128):
        results = []

        def worker():
            results.append(rate(batch, max(2, 512 // batch)))

        threads = [threading.Thread(target=worker) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        out["two_threads"][batch] = round(sum(results))
    return out


def pipeline_figures(batches: list[int], repeat: int) -> dict:
    """decode -> preprocess -> ResNet-50 float16 -> top-5 in one process on one stream: images/s per batch.

    The same steps as the image_pipeline ensemble without its process hops: the ceiling of the
    ensemble's GPU work at that batch size.
    """
    import torch

    from bench.models.load import camera_picture, jpeg
    from models.classifier import Classifier, ClassifierSettings
    from models.decode import Decoder
    from models.pipeline import ImagePipeline

    device = torch.device("cuda", 0)
    decoder = Decoder(device)
    pipeline = ImagePipeline(Classifier(ClassifierSettings(weights=None, seed=0, device=device)))
    images = [jpeg(camera_picture(1080, 1920, seed)) for seed in range(16)]
    out = {}
    for batch in batches:
        work = [[images[i % len(images)]] for i in range(batch)]

        def rate(calls: int) -> float:
            torch.cuda.synchronize()
            began = time.perf_counter()
            for _ in range(calls):
                frames = [f for frames in decoder.decode_requests(work) for f in frames]
                pipeline.classify_frames(frames).indices.cpu()
            return batch * calls / (time.perf_counter() - began)

        rate(2)
        out[batch] = round(statistics.median(rate(max(2, 256 // batch)) for _ in range(repeat)))
    return out


def nvdec_figures(clips: Path, sessions_list: list[int], seconds: float) -> dict:
    import torch

    from models.video_decode import NvDecDecoder

    device = torch.device("cuda", 0)
    torch.cuda.init()
    out = {}
    for codec in CODECS:
        units = read_clip(clips, codec)
        figures = {}
        for sessions in sessions_list:
            counts = [0] * sessions
            deadline = [0.0]
            errors = []
            ready, go = threading.Barrier(sessions + 1), threading.Event()

            def stream(index: int):
                try:
                    torch.cuda.set_device(device)
                    decoder = NvDecDecoder(codec, device)
                    ready.wait()
                    go.wait()
                    while time.perf_counter() < deadline[0]:
                        for unit in units:
                            counts[index] += len(decoder.decode(unit))
                        counts[index] += len(decoder.flush())
                        decoder.close()
                        decoder = NvDecDecoder(codec, device)
                except Exception as exc:  # recorded: a decoder that fails shows in the figures
                    errors.append(repr(exc))
                    ready.abort()

            threads = [threading.Thread(target=stream, args=(i,)) for i in range(sessions)]
            for thread in threads:
                thread.start()
            try:
                ready.wait()
            except threading.BrokenBarrierError:
                pass
            began = time.perf_counter()
            deadline[0] = began + seconds
            go.set()
            for thread in threads:
                thread.join()
            torch.cuda.synchronize()
            elapsed = time.perf_counter() - began
            figures[sessions] = {"frames_per_s": round(sum(counts) / elapsed), "errors": errors[:3]}
            print(codec, sessions, figures[sessions], flush=True)
        out[codec] = figures
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    clips = commands.add_parser("clips")
    clips.add_argument("--out", type=Path, required=True)
    measure = commands.add_parser("measure")
    measure.add_argument("--clips", type=Path)
    measure.add_argument("--out", type=Path, required=True)
    measure.add_argument("--jpeg-batches", type=int, nargs="*", default=[1, 32, 64, 128, 256])
    measure.add_argument("--sessions", type=int, nargs="*", default=[1, 16, 64, 128])
    measure.add_argument("--nvdec-seconds", type=float, default=4.0)
    measure.add_argument("--pipeline-batches", type=int, nargs="*", default=[16, 64, 128])
    measure.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    if args.command == "clips":
        write_clips(args.out)
        return 0
    figures = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if args.jpeg_batches:
        figures["nvjpeg"] = jpeg_figures(args.jpeg_batches, args.repeat)
        print("nvjpeg", figures["nvjpeg"], flush=True)
        args.out.write_text(json.dumps(figures, indent=1))
    if args.pipeline_batches:
        figures["pipeline"] = pipeline_figures(args.pipeline_batches, args.repeat)
        print("pipeline", figures["pipeline"], flush=True)
        args.out.write_text(json.dumps(figures, indent=1))
    if args.clips and args.sessions:
        figures["nvdec"] = nvdec_figures(args.clips, args.sessions, args.nvdec_seconds)
    args.out.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
