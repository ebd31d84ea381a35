import json, collections, statistics as st, sys
d = collections.defaultdict(list)
for line in open(sys.argv[1]):
    if " {\"mode\"" not in line[:20]: continue
    p, js = line.split(' ', 1); r = json.loads(js)
    d[(p, r['mode'])].append(r)
for k, rs in sorted(d.items()):
    f = lambda key: sorted(round(r[key], 3) for r in rs)
    print(k, len(rs), 'e2e', st.median(f('end_to_end_s')), f('end_to_end_s')[0], f('end_to_end_s')[-1], '| outside', st.median(f('outside_network_s')), '| net', st.median(f('network_calls_in_run_s')), '| cpu', st.median(f('cpu_s')), '| mo', st.median(f('model_only_tiles_per_s')))
    if k[1] == 'burn': print('   ratio', f('pipeline_efficiency'), 'median', st.median(f('pipeline_efficiency')))
