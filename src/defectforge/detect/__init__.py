"""2D anomaly detection: ExDD (dual memory bank) with PatchCore as its one-bank case.

Heavy modules (torch, timm, faiss) load on first use of a detector, so importing this
package stays cheap.

    from defectforge.detect import ExDD, PatchCore, get_detector
    model = ExDD(image_size=256).fit(normal_samples, defects=defect_samples)
    pred = model.predict(test_samples)      # Prediction(pred_score, anomaly_map, pred_label, pred_mask)
    model.save("model.pt"); load_detector("model.pt")   # any registered 2D detector
"""

from defectforge.detect.base import (DETECTORS, Detector, Prediction, available_detectors, get_detector,
                                     load_detector, register_detector)

__all__ = ["DETECTORS", "Detector", "ExDD", "PatchCore", "Prediction", "available_detectors", "get_detector",
           "load_detector", "register_detector", "evaluate_detector", "add_eval_section"]


def __getattr__(name: str):
    if name in ("ExDD", "PatchCore"):
        from defectforge.detect import exdd

        return getattr(exdd, name)
    if name in ("evaluate_detector", "add_eval_section"):
        from defectforge.detect import evaluate

        return getattr(evaluate, name)
    raise AttributeError(name)
