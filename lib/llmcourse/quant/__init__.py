"""Making a model smaller (chapter 09): int8 weights with one scale per output channel, layers
whose matmul runs on the int8 codes, a GPT quantized, saved and loaded, and torch's own dynamic
int8 quantization as the peer.
"""

from llmcourse.quant.gpt_int8 import (
    QuantizedGPT,
    dequantize_model,
    load_quantized,
    quantize_model,
    save_quantized,
    torch_dynamic_int8,
)
from llmcourse.quant.int8 import (
    Int8Embedding,
    Int8Linear,
    dequantize,
    output_error_bound,
    quantize,
)

__all__ = ["quantize", "dequantize", "output_error_bound", "Int8Linear", "Int8Embedding",
           "QuantizedGPT", "quantize_model", "dequantize_model", "save_quantized",
           "load_quantized", "torch_dynamic_int8"]
