import json,os
D='/tmp/exp/bn'  # var.sh's output folder
rows=[('default (network lr 1e-4)','2025','base'),('BatchNorm statistics frozen in the network stage','2025','fbn'),
      ('weights averaged in both stages (EMA, momentum warmed up towards 0.98: 0.97 at step 300), the average scored and kept','2025','ema'),('network lr 3e-4','2025','lr3'),
      ('network lr 1e-3','2025','lr10'),('default (network lr 1e-4)','7','base_s7'),('network lr 3e-4','7','lr3_s7')]
sets=[('nucls','NuCLS'),('shiftn','shifted-nucls'),('s7','shifted')]
print('| variant | seed | '+' | '.join(f'{b} test det F1 / macro F1 (agreement) | {b} held out' for a,b in sets)+' |')
print('|---|---|'+'---|---|'*3)
for name,seed,tag in rows:
    cells=[]
    ok=True
    for s,_ in sets:
        f=f'{D}/{s}_{tag}.score.json'
        if not os.path.exists(f): ok=False; break
        sc=json.load(open(f)); h=sc['hungarian']; r=json.load(open(f'{D}/{s}_{tag}.report.json')); fr=r.get('full',r)
        ho=fr['held_out'][fr['chosen']]
        cells.append(f"{h['det_f1']:.3f} / {h['macro_f1']:.3f} ({sc['agreement_on_matched']:.2f})")
        cells.append(f"{ho['det_f1']:.3f} / {ho['macro_f1']:.3f} ({fr['chosen']})")
    if ok: print(f'| {name} | {seed} | '+' | '.join(cells)+' |')
