"""OpenAI Triton-language kernels for the models, each beside its plain torch reference.

* `kernels.preprocess.preprocess`: uint8 frames -> antialiased resize (optional letterbox),
  normalize, NCHW float16/float32, in one pass;
* `kernels.postprocess.softmax_topk`: fused softmax + top-k (k <= 16);
* `kernels.temporal.temporal_update`: motion energy (whole frame and per tile) and the EMA
  background, in one pass.

CUDA tensors run the Triton kernels, CPU tensors the references; `kernels._dispatch` documents
the TRITONFLEET_KERNELS and TRITONFLEET_AUTOTUNE switches.
"""
