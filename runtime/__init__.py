"""The edge runtime (installed as ``probscale_edge.runtime``): load a bundle, tokenize, predict, benchmark.

Depends only on numpy, tokenizers and onnxruntime (or ai-edge-litert for .tflite bundles): never
on torch or transformers, so it installs on phones, ARM boards and slim containers. Signed bundles
(``public_key=``, ``$PROBSCALE_EDGE_PUBLIC_KEY``) also need ``model-signing`` (``probscale-edge[sign]``),
imported only when a signature is made or checked.

    from probscale_edge.runtime import Predictor
    p = Predictor("bundle/")
    p.predict(["a gripping, beautifully shot film"])  # -> [Prediction(label='fresh', ...)]
"""

from probscale_edge.runtime.bundle import FORMAT_VERSION, load_manifest, verify_bundle, write_manifest
from probscale_edge.runtime.predictor import Prediction, Predictor
from probscale_edge.runtime.signing import sign_bundle, verify_signature

__all__ = ["Predictor", "Prediction", "load_manifest", "verify_bundle", "write_manifest", "sign_bundle",
           "verify_signature", "FORMAT_VERSION"]
