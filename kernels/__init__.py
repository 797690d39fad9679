"""OpenAI Triton-language kernels for the models, each beside its plain torch reference.

* `kernels.preprocess.preprocess`: uint8 frames -> antialiased resize (optional letterbox),
  normalize, NCHW float16/float32, in one pass;
* `kernels.yuv.nv12_to_tensor` / `i420_to_tensor`: decoder output (NV12, planar YUV 4:2:0) ->
  colour conversion (BT.601/BT.709, limited/full range), the same resize, letterbox and
  normalization, in one pass;
* `kernels.postprocess.softmax_topk`: fused softmax + top-k (k <= 16);
* `kernels.temporal.temporal_update`: motion energy (whole frame and per tile) and the EMA
  background, in one pass.

Each module holds its kernel, launch wrapper, reference and entry point; `kernels._resample`
holds what the two resizing kernels share. CUDA tensors run the Triton kernels, CPU tensors the
references; `kernels._dispatch` documents the TRITONFLEET_KERNELS and TRITONFLEET_AUTOTUNE switches.
"""
