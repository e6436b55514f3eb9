// llmir dashboard filters: plain JavaScript, no framework, no network.
// Every filterable element carries data-suite, data-device, data-metric,
// data-name and data-verdict; an empty attribute means "not applicable"
// (tuning runs have no suite) and matches any choice.
'use strict';
(function () {
  const $ = (id) => document.getElementById(id);
  const controls = ['f-suite', 'f-device', 'f-metric', 'f-name', 'f-attention'].map($);
  const items = Array.from(document.querySelectorAll('.f'));
  const rows = items.filter((el) => el.tagName === 'TR');

  function matches(el, key, want) {
    const have = el.dataset[key] || '';
    return want === '' || have === '' || have === want;
  }

  function apply() {
    const suite = $('f-suite').value, device = $('f-device').value, metric = $('f-metric').value;
    const name = $('f-name').value.trim().toLowerCase();
    const attention = $('f-attention').checked;
    let shown = 0;
    for (const el of items) {
      const verdict = el.dataset.verdict || '';
      const ok = matches(el, 'suite', suite) && matches(el, 'device', device) && matches(el, 'metric', metric) &&
        (name === '' || (el.dataset.name || '').toLowerCase().includes(name)) &&
        (!attention || verdict === 'regressed' || verdict === 'improved' || verdict === '');
      el.classList.toggle('hidden', !ok);
      if (ok && el.tagName === 'TR') shown++;
    }
    $('f-count').textContent = shown + ' of ' + rows.length + ' benchmarks shown';
    const params = new URLSearchParams();
    if (suite) params.set('suite', suite);
    if (device) params.set('device', device);
    if (metric) params.set('metric', metric);
    if (name) params.set('name', name);
    if (attention) params.set('attention', '1');
    const q = params.toString();
    if (window.history && window.history.replaceState && location.protocol !== 'file:') {
      window.history.replaceState(null, '', q ? '?' + q + location.hash : location.pathname + location.hash);
    }
  }

  // Filters survive a reload and can be shared as a link (?suite=…&device=…).
  const initial = new URLSearchParams(location.search);
  for (const [id, key] of [['f-suite', 'suite'], ['f-device', 'device'], ['f-metric', 'metric'], ['f-name', 'name']]) {
    if (initial.has(key)) $(id).value = initial.get(key);
  }
  $('f-attention').checked = initial.get('attention') === '1';
  for (const c of controls) {
    c.addEventListener(c.tagName === 'INPUT' && c.type === 'search' ? 'input' : 'change', apply);
  }
  apply();
})();
