/** The `/dashboard` page: plain HTML + ECharts (served by the edge at /dashboard/echarts.min.js), polling /dashboard/data. */
export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>unimoe - expert load</title>
<style>
  body { font: 14px system-ui, sans-serif; margin: 16px; color: #222; }
  h1 { font-size: 18px; margin: 0 0 8px; }
  .bar button { margin-right: 4px; padding: 4px 10px; border: 1px solid #888; background: #fff; cursor: pointer; }
  .bar button.on { background: #234; color: #fff; }
  .grid { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; }
  .chart { height: 360px; border: 1px solid #ddd; }
  #heatmap { grid-row: span 2; height: 732px; }
</style>
</head>
<body>
<h1>Expert load - <span id="model"></span></h1>
<div class="bar" id="modalities"></div>
<div class="bar" style="margin: 6px 0 10px">
  <button data-view="rate" class="on">tokens/s (last <span id="window"></span> s)</button><button data-view="total">tokens since start</button>
</div>
<div class="grid">
  <div id="heatmap" class="chart"></div>
  <div id="replicas" class="chart"></div>
  <div id="balance" class="chart"></div>
</div>
<script src="/dashboard/echarts.min.js"></script>
<script>
const state = { modality: 'all', view: 'rate', data: null };
const heat = echarts.init(document.getElementById('heatmap'));
const replicas = echarts.init(document.getElementById('replicas'));
const balance = echarts.init(document.getElementById('balance'));
const modalities = ['all', 'text', 'image', 'audio', 'video'];
const bar = document.getElementById('modalities');
for (const m of modalities) {
  const b = document.createElement('button');
  b.textContent = m; b.dataset.modality = m; if (m === state.modality) b.className = 'on';
  b.onclick = () => { state.modality = m; for (const x of bar.children) x.className = x.dataset.modality === m ? 'on' : ''; draw(); };
  bar.appendChild(b);
}
for (const b of document.querySelectorAll('[data-view]')) {
  b.onclick = () => { state.view = b.dataset.view; for (const x of document.querySelectorAll('[data-view]')) x.className = x === b ? 'on' : ''; draw(); };
}
function draw() {
  const d = state.data; if (!d) return;
  document.getElementById('model').textContent = d.model;
  document.getElementById('window').textContent = d.windowSeconds;
  const grid = d[state.view][state.modality];
  const cells = []; let max = 0;
  grid.forEach((row, l) => row.forEach((v, e) => { cells.push([e, l, +v.toFixed(3)]); max = Math.max(max, v); }));
  heat.setOption({
    animation: false,
    title: { text: 'Routed tokens per layer x expert (' + state.modality + ')', textStyle: { fontSize: 13 } },
    tooltip: { formatter: (p) => 'layer ' + p.value[1] + ', expert ' + p.value[0] + ': ' + p.value[2] },
    grid: { left: 60, right: 20, top: 40, bottom: 90 },
    xAxis: { type: 'category', name: 'expert', nameLocation: 'middle', nameGap: 24, data: Array.from({ length: d.experts }, (_, i) => String(i)) },
    yAxis: { type: 'category', name: 'layer', data: Array.from({ length: d.layers }, (_, i) => String(i)) },
    visualMap: { min: 0, max: Math.max(max, 1e-9), calculable: true, orient: 'horizontal', left: 'center', bottom: 10, inRange: { color: ['#f7fbff', '#6baed6', '#08306b'] } },
    series: [{ type: 'heatmap', data: cells, label: { show: d.layers * d.experts <= 64, fontSize: 10 } }],
  }, true);
  const pools = [...new Set(d.replicas.flatMap((s) => Object.keys(s.pools)))].sort();
  replicas.setOption({
    animation: false,
    title: { text: 'Replicas per pool', textStyle: { fontSize: 13 } },
    tooltip: { trigger: 'axis' }, legend: { top: 22 },
    grid: { left: 40, right: 20, top: 60, bottom: 30 },
    xAxis: { type: 'time' }, yAxis: { type: 'value', minInterval: 1 },
    series: pools.map((p) => ({ name: p, type: 'line', step: 'end', showSymbol: false, data: d.replicas.map((s) => [s.at, s.pools[p] || 0]) })),
  }, true);
  balance.setOption({
    animation: false,
    title: { text: 'Balancedness per layer (mean / max load per replica)', textStyle: { fontSize: 13 } },
    grid: { left: 40, right: 20, top: 40, bottom: 40 },
    xAxis: { type: 'category', name: 'layer', nameLocation: 'middle', nameGap: 24, data: d.balancedness.map((_, l) => String(l)) },
    yAxis: { type: 'value', min: 0, max: 1 },
    series: [{ type: 'bar', data: d.balancedness.map((b) => +b.toFixed(3)) }],
  }, true);
}
async function poll() {
  try {
    const r = await fetch('/dashboard/data');
    if (r.ok) { state.data = await r.json(); draw(); window.dashboard.updates++; }
  } catch (e) { /* the edge restarts: keep polling */ }
  setTimeout(poll, 2000);
}
// For tests and scripts: where a heatmap cell is drawn, in page pixels.
window.dashboard = {
  updates: 0,
  cellCenter(layer, expert) {
    const [x, y] = heat.convertToPixel({ seriesIndex: 0 }, [expert, layer]);
    const box = document.getElementById('heatmap').getBoundingClientRect();
    return { x: box.left + x, y: box.top + y };
  },
};
poll();
</script>
</body>
</html>
`;
