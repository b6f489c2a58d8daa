import sys, warnings
warnings.filterwarnings("ignore")
from pathlib import Path
from anomalib.data import MVTecAD, Folder
from anomalib.engine import Engine
from anomalib.models import Padim

root = Path(sys.argv[1])  # .../mvtec/<category>
dm = MVTecAD(root=root.parent, category=root.name, train_batch_size=8, eval_batch_size=8, num_workers=0)
dm.setup()
for name, ds in (("train", dm.train_data), ("test", dm.test_data)):
    df = ds.samples
    print(name, len(df), "abnormal", int((df.label_index == 1).sum()),
          "with mask", int(df.mask_path.fillna("").astype(bool).sum()))
fd = Folder(name="bsdata", root=root, normal_dir="train/good", abnormal_dir="test/pitting",
            normal_test_dir="test/good", mask_dir="ground_truth/pitting", num_workers=0,
            train_batch_size=8, eval_batch_size=8)
fd.setup()
print("Folder: train", len(fd.train_data), "test", len(fd.test_data))
model = Padim(backbone="resnet18", pre_trained=False, layers=["layer1", "layer2"])
engine = Engine(max_epochs=1, accelerator="cpu", devices=1, logger=False, default_root_dir="/tmp/eco/anomalib_runs",
                enable_progress_bar=False)
engine.fit(model=model, datamodule=dm)
res = engine.test(model=model, datamodule=dm, verbose=False)
print("test:", {k: round(float(v), 4) for k, v in res[0].items()})
