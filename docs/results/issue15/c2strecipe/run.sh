#!/bin/bash
# usage (repo root): bash docs/results/issue15/c2strecipe/run.sh SEEDS NAMES   e.g. "0 1 2" "fitted transplant_matched best_recipe_n100"
# synth each config with seed S into out/c2st_<name>_s<S>; the card's .realism is copied to cards/.
D=${C2ST_DIR:-docs/results/issue15/c2strecipe}
mkdir -p $D/cards out
for S in $1; do for N in $2; do
  sed -e "s/^seed: .*/seed: $S/" -e "s|path: ../shared|path: $(readlink -f ../shared)|" $D/$N.yaml > out/$N.s$S.yaml
  t0=$(date +%s); echo "$(date -u +%T) start $N s$S load: $(uptime | sed 's/.*average: //')"
  /work/main/.venv/bin/defectforge synth --config out/$N.s$S.yaml --out out/c2st_${N}_s$S -j 1 --overwrite > out/c2st_${N}_s$S.log 2>&1 || { echo "FAILED $N $S"; tail -3 out/c2st_${N}_s$S.log; continue; }
  python3 -c "import json,sys; c=json.load(open('out/c2st_${N}_s$S/dataset_card.json'))['realism']; c['wall_s']=$(date +%s)-$t0; json.dump(c, open('$D/cards/realism_${N}_s$S.json','w'), indent=1); print('$N s$S', c.get('c2st_auc'), c.get('c2st_ci'), 'floor', c.get('c2st_floor_auc'))"
  echo "$(date -u +%T) done $N s$S in $(( $(date +%s)-t0 )) s load: $(uptime | sed 's/.*average: //')"
done; done
