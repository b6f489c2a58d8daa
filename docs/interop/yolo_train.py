import os, sys
os.environ["YOLO_CONFIG_DIR"] = "/tmp/eco/ucfg"
from ultralytics import YOLO
from ultralytics.data.utils import check_det_dataset
info = check_det_dataset(sys.argv[1])
print("check_det_dataset:", {k: info[k] for k in ("train", "val", "test", "nc", "names")})
m = YOLO("yolov8n.yaml")
r = m.train(data=sys.argv[1], epochs=1, imgsz=160, batch=8, workers=0, device="cpu", plots=False,
            project="/tmp/eco/runs", name="y", exist_ok=True, amp=False, val=True, verbose=False)
print("metrics:", {k: round(float(v), 4) for k, v in r.results_dict.items()})
