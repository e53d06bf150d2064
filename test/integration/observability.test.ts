// The monitoring kit in deploy/: Prometheus rules (promtool check + unit tests), Grafana dashboards
// (valid JSON, valid PromQL), every metric they query exported by reapi, promtool's lint of reapi's
// real /metrics after a Bazel build, and a real Prometheus scraping `reapi serve` with the example
// configuration and rules.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { copyFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { findOnPath } from '../support/commands.ts';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { Metrics } from '../../common/metrics.ts';
import { bazelAvailable, createBazel } from '../e2e/bazel.ts';
import { httpGet, startReapi, type ReapiProcess } from '../support/reapi-process.ts';
import { freePort } from '../support/net.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const PROM_DIR = join(ROOT, 'deploy/prometheus');
const RULES = join(PROM_DIR, 'rules.yml');
const PROM_CONFIG = join(PROM_DIR, 'prometheus.yml');
const RULE_TESTS = readdirSync(join(PROM_DIR, 'tests'))
  .filter((f) => f.endsWith('.yml'))
  .sort()
  .map((f) => join(PROM_DIR, 'tests', f));
const DASHBOARDS = ['overview', 'determinism', 'storage'].map((n) => join(ROOT, 'deploy/grafana', `${n}.json`));

const PROMTOOL = findOnPath('promtool');
const PROMETHEUS = findOnPath('prometheus');
const noPromtool = !PROMTOOL && 'promtool is not installed (Debian package prometheus)';
const isRoot = process.getuid?.() === 0;

function promtool(args: string[], input?: string): { code: number; out: string } {
  const r = spawnSync(PROMTOOL!, args, { cwd: ROOT, input, encoding: 'utf8', timeout: 60_000 });
  return { code: r.status ?? -1, out: `${r.stdout ?? ''}${r.stderr ?? ''}` };
}

/** promtool without blocking, to run the rule test files side by side. */
function promtoolAsync(args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolveRun, reject) => {
    const child = spawn(PROMTOOL!, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (out += b.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolveRun({ code: code ?? -1, out }));
  });
}

// ---------------------------------------------------------------------------------------------
// Reading the rules and dashboards (no YAML library: rules.yml and the tests keep a plain style).

interface RuleExpr {
  kind: 'record' | 'alert';
  name: string;
  expr: string;
}

/** The rules of a Prometheus rule file: `- record:`/`- alert:` then `expr:` (one line or a `|` block). */
function readRules(text: string): RuleExpr[] {
  const lines = text.split('\n');
  const rules: RuleExpr[] = [];
  let current: { kind: 'record' | 'alert'; name: string } | undefined;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    const head = /^\s*-\s+(record|alert):\s*(\S+)\s*$/.exec(line);
    if (head) {
      current = { kind: head[1] as 'record' | 'alert', name: head[2]! };
      continue;
    }
    const m = /^(\s*)expr:\s*(.*)$/.exec(line);
    if (!m) continue;
    assert.ok(current, `expr without a rule at line ${i + 1}`);
    let expr = m[2]!.trim();
    if (/^[|>][-+]?$/.test(expr)) {
      const indent = m[1]!.length;
      const body: string[] = [];
      while (i + 1 < lines.length && (lines[i + 1]!.trim() === '' || /^\s*/.exec(lines[i + 1]!)![0].length > indent)) body.push(lines[++i]!);
      expr = body.join('\n').trim();
    } else if (/^(['"]).*\1$/.test(expr)) {
      expr = expr.slice(1, -1);
    }
    rules.push({ ...current, expr });
    current = undefined;
  }
  return rules;
}

interface DashboardQuery {
  dashboard: string;
  where: string;
  expr: string;
}

function readDashboard(path: string): Record<string, unknown> {
  return JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
}

/** Every PromQL expression of a dashboard (panel targets) and its query variables. */
function dashboardQueries(path: string): DashboardQuery[] {
  const dash = readDashboard(path);
  const name = String(dash['title']);
  const out: DashboardQuery[] = [];
  const walk = (v: unknown, where: string): void => {
    if (Array.isArray(v)) v.forEach((x, i) => walk(x, `${where}[${i}]`));
    else if (v && typeof v === 'object') {
      const o = v as Record<string, unknown>;
      if (typeof o['expr'] === 'string') out.push({ dashboard: name, where: `${where} (${String(o['refId'])})`, expr: o['expr'] });
      for (const [k, x] of Object.entries(o)) if (k !== 'templating') walk(x, k === 'panels' ? where : `${where}.${k}`);
    }
  };
  for (const p of dash['panels'] as Array<Record<string, unknown>>) walk(p, `panel "${String(p['title'])}"`);
  const vars = ((dash['templating'] as { list: Array<Record<string, unknown>> }).list ?? []).filter((v) => v['type'] === 'query');
  for (const v of vars) {
    const q = v['query'];
    const text = typeof q === 'string' ? q : String((q as Record<string, unknown>)['query']);
    out.push({ dashboard: name, where: `variable $${String(v['name'])}`, expr: text });
  }
  return out;
}

/** Grafana's variables replaced by values PromQL accepts. */
function grafanaToPromql(expr: string): string {
  return expr
    .replaceAll('$__rate_interval', '5m')
    .replaceAll('$__range', '1h')
    .replaceAll('$__interval', '1m')
    .replace(/\$\{?(\w+)\}?/g, '.*');
}

/**
 * Metric names an expression selects: identifiers starting with `reapi_`, not inside label
 * matchers, strings, ranges or grouping clauses; recording rules (with ':') are not metrics.
 */
function metricNames(expr: string): string[] {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  const names = new Set<string>();
  for (const m of stripped.matchAll(/[A-Za-z_:][A-Za-z0-9_:]*/g)) {
    if (m[0].startsWith('reapi_') && !m[0].includes(':')) names.add(m[0]);
  }
  return [...names];
}

const HISTOGRAM_SUFFIX = /_(bucket|sum|count)$/;

// ---------------------------------------------------------------------------------------------

describe('observability: rules, dashboards and metrics', () => {
  let dataDir: string;
  let server: ReapiProcess;
  let bazelRan = false;

  before(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'reapi-observability-'));
    server = await startReapi(['serve', '--data-dir', dataDir, '--log-level', 'warn']);
  });

  after(async () => {
    await server?.stop();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  test('promtool check rules, check config and test rules pass', { skip: noPromtool }, async () => {
    const check = promtool(['check', 'rules', RULES]);
    assert.equal(check.code, 0, check.out);
    const config = promtool(['check', 'config', PROM_CONFIG]);
    assert.equal(config.code, 0, config.out);
    assert.ok(RULE_TESTS.length > 0);
    for (const r of await Promise.all(RULE_TESTS.map((f) => promtoolAsync(['test', 'rules', f])))) assert.equal(r.code, 0, r.out);
  });

  test('the rule unit tests cover every alert (firing and not firing) and every recording rule', () => {
    const rules = readRules(readFileSync(RULES, 'utf8'));
    const text = readFileSync(RULES, 'utf8');
    assert.equal(rules.length, (text.match(/^\s*-\s+(record|alert):/gm) ?? []).length, 'every rule has an expr');
    const firing = new Set<string>();
    const quiet = new Set<string>();
    const tested = new Set<string>();
    for (const file of RULE_TESTS) {
      const lines = readFileSync(file, 'utf8').split('\n');
      lines.forEach((line, i) => {
        const alert = /^\s*alertname:\s*(\S+)/.exec(line);
        if (alert) {
          const exp = lines.slice(i + 1).find((l) => /^\s*exp_alerts:/.test(l));
          assert.ok(exp, `${file}: ${alert[1]} without exp_alerts`);
          (/exp_alerts:\s*\[\]\s*$/.test(exp) ? quiet : firing).add(alert[1]!);
        }
        const expr = /^\s*-?\s*expr:\s*(\S+)/.exec(line);
        if (expr) tested.add(expr[1]!);
      });
    }
    for (const r of rules) {
      if (r.kind === 'alert') {
        assert.ok(firing.has(r.name), `no test where ${r.name} fires`);
        assert.ok(quiet.has(r.name), `no test where ${r.name} stays quiet`);
      } else {
        assert.ok(tested.has(r.name), `no promql_expr_test for ${r.name}`);
      }
    }
  });

  test('the dashboards are Grafana dashboards on a ${datasource} variable', () => {
    const uids = new Set<string>();
    for (const path of DASHBOARDS) {
      const dash = readDashboard(path);
      assert.ok(typeof dash['uid'] === 'string' && !uids.has(dash['uid']), `${path}: unique uid`);
      uids.add(dash['uid'] as string);
      assert.ok(Number(dash['schemaVersion']) >= 36, `${path}: schemaVersion`);
      const vars = (dash['templating'] as { list: Array<Record<string, unknown>> }).list;
      assert.ok(vars.some((v) => v['name'] === 'datasource' && v['type'] === 'datasource' && v['query'] === 'prometheus'), `${path}: $datasource`);
      const panels = dash['panels'] as Array<Record<string, unknown>>;
      const ids = new Set<number>();
      for (const p of panels) {
        assert.ok(!ids.has(p['id'] as number), `${path}: duplicate panel id ${String(p['id'])}`);
        ids.add(p['id'] as number);
        const grid = p['gridPos'] as { x: number; w: number; h: number };
        assert.ok(grid.x + grid.w <= 24 && grid.h > 0, `${path}: panel "${String(p['title'])}" grid`);
        if (p['type'] === 'row' || p['type'] === 'text') continue;
        assert.deepEqual(p['datasource'], { type: 'prometheus', uid: '${datasource}' }, `${path}: panel "${String(p['title'])}" datasource`);
        const targets = p['targets'] as Array<Record<string, unknown>>;
        assert.ok(targets.length > 0, `${path}: panel "${String(p['title'])}" has no query`);
        if (p['type'] !== 'table') {
          const unit = (p['fieldConfig'] as { defaults: { unit?: string } }).defaults.unit;
          assert.ok(unit, `${path}: panel "${String(p['title'])}" has no unit`);
        }
      }
      assert.ok(panels.filter((p) => p['type'] !== 'row').length >= 8, `${path}: too few panels`);
    }
  });

  test('every dashboard query is valid PromQL', { skip: noPromtool }, async () => {
    const queries = DASHBOARDS.flatMap(dashboardQueries).filter((q) => !q.expr.startsWith('label_values('));
    assert.ok(queries.length > 30, `only ${queries.length} queries`);
    const dir = await mkdtemp(join(tmpdir(), 'reapi-dashboard-promql-'));
    try {
      const rules = queries.map((q, i) => `      - record: dashboard_query_${i}\n        expr: ${JSON.stringify(grafanaToPromql(q.expr))}\n`);
      const file = join(dir, 'dashboards.yml');
      await writeFile(file, `groups:\n  - name: dashboards\n    rules:\n${rules.join('')}`);
      const r = promtool(['check', 'rules', file]);
      const bad = [...r.out.matchAll(/dashboard_query_(\d+)/g)].map((m) => queries[Number(m[1])]);
      assert.equal(r.code, 0, `${r.out}\n${JSON.stringify(bad, null, 2)}`);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('every metric the dashboards and rules query is one reapi exports', async () => {
    const exposition = await httpGet(server.httpPort, '/metrics');
    const known = new Map<string, string>();
    for (const m of exposition.matchAll(/^# TYPE (\S+) (\S+)$/gm)) known.set(m[1]!, m[2]!);
    for (const m of await new Metrics({ defaultMetrics: false }).registry.getMetricsAsJSON()) {
      known.set(m.name, String(m.type));
    }
    assert.ok([...known.keys()].filter((n) => n.startsWith('reapi_')).length >= 20, [...known.keys()].join(' '));

    const exprs = [
      ...readRules(readFileSync(RULES, 'utf8')).map((r) => ({ where: `rules.yml ${r.name}`, expr: r.expr })),
      ...DASHBOARDS.flatMap(dashboardQueries).map((q) => ({ where: `${q.dashboard} ${q.where}`, expr: q.expr })),
    ];
    const used = new Set<string>();
    const problems: string[] = [];
    for (const { where, expr } of exprs) {
      for (const name of metricNames(expr)) {
        const base = name.replace(HISTOGRAM_SUFFIX, '');
        if (known.has(name)) used.add(name);
        else if (base !== name && known.get(base) === 'histogram') used.add(base);
        else problems.push(`${where}: ${name} is not a metric reapi exports${known.has(base) ? ` as a histogram (${base} is a ${known.get(base)})` : ''}`);
      }
    }
    assert.deepEqual(problems, []);
    // The kit looks at (nearly) everything reapi exports.
    const unused = [...known.keys()].filter((n) => n.startsWith('reapi_') && !used.has(n));
    assert.ok(used.size >= 20, `only ${used.size} metrics used`);
    assert.deepEqual(unused, [], 'metrics no dashboard or rule shows');
  });

  test(
    'promtool check metrics accepts /metrics after a real Bazel build',
    { skip: noPromtool || (!bazelAvailable() && 'bazel is not installed') || (!isRoot && 'the bwrap sandbox needs root'), timeout: 300_000 },
    async (t) => {
      const bazel = await createBazel();
      try {
        const r = await bazel.run(['build', '//...', ...bazel.remoteFlags(server.endpoint, 'executor')]);
        assert.equal(r.code, 0, r.stderr.slice(-4000));
        bazelRan = true;
      } finally {
        await bazel.dispose();
      }
      const text = await httpGet(server.httpPort, '/metrics');
      assert.match(text, /^reapi_actions_executed_total\{outcome="success"\} [1-9]/m);
      assert.match(text, /^reapi_execution_stage_duration_seconds_bucket\{/m);

      // reapi's own metric families alone: no complaint at all.
      const families = text.split(/\n(?=# HELP )/);
      const own = families.filter((f) => f.startsWith('# HELP reapi_')).join('\n') + '\n';
      const ownCheck = promtool(['check', 'metrics'], own);
      assert.equal(ownCheck.code, 0, `promtool check metrics on reapi_* metrics:\n${ownCheck.out}`);

      // The whole exposition: only prom-client's default metrics may be flagged.
      const all = promtool(['check', 'metrics'], text);
      const flagged = all.out
        .split('\n')
        .filter((l) => l.trim() !== '')
        .map((l) => ({ line: l, name: l.split(/\s+/)[0]! }));
      for (const f of flagged) {
        assert.ok(!f.name.startsWith('reapi_'), f.line);
        assert.match(f.name, /^(process|nodejs)_/, `unexpected promtool complaint: ${f.line}`);
        t.diagnostic(`promtool (prom-client default metric): ${f.line}`);
      }
      assert.ok(all.code === 0 || (all.code === 3 && flagged.length > 0), all.out);
    },
  );

  test('a real Prometheus scrapes reapi serve with the example config and rules', { skip: !PROMETHEUS && 'prometheus is not installed', timeout: 120_000 }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'reapi-prometheus-'));
    let prom: ChildProcess | undefined;
    let logs = '';
    try {
      // The example configuration, scraping this reapi serve every second.
      const port = await freePort();
      let config = readFileSync(PROM_CONFIG, 'utf8');
      for (const [from, to] of [
        [/scrape_interval: 15s/, 'scrape_interval: 1s'],
        [/evaluation_interval: 15s/, 'evaluation_interval: 1s'],
        [/'reapi:8981'/, `'127.0.0.1:${server.httpPort}'`],
      ] as const) {
        assert.match(config, from, 'deploy/prometheus/prometheus.yml changed: update this test');
        config = config.replace(from, to);
      }
      await writeFile(join(dir, 'prometheus.yml'), config);
      await copyFile(RULES, join(dir, 'rules.yml'));

      const started = Date.now();
      prom = spawn(
        PROMETHEUS!,
        [`--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`],
        { stdio: ['ignore', 'ignore', 'pipe'] },
      );
      prom.stderr!.on('data', (b: Buffer) => (logs += b.toString()));
      const exited = new Promise<number | null>((r) => prom!.once('exit', (code) => r(code)));
      const api = async <T,>(path: string): Promise<T> => {
        const res = await fetch(`http://127.0.0.1:${port}${path}`);
        const body = (await res.json()) as { status: string; data: T };
        assert.equal(body.status, 'success', JSON.stringify(body));
        return body.data;
      };
      type Sample = { metric: Record<string, string>; value: [number, string] };
      const query = async (q: string): Promise<Sample[]> => (await api<{ result: Sample[] }>(`/api/v1/query?query=${encodeURIComponent(q)}`)).result;

      // Data within 20 s of starting Prometheus.
      const deadline = started + 20_000;
      let capacity: Sample[] = [];
      for (;;) {
        if (prom.exitCode !== null) assert.fail(`prometheus exited with ${prom.exitCode}:\n${logs}`);
        try {
          capacity = await query('reapi_cas_capacity_bytes{job="reapi-serve"}');
          if (capacity.length > 0) break;
        } catch {
          // not ready yet
        }
        if (Date.now() > deadline) assert.fail(`no data from Prometheus within 20 s:\n${logs.slice(-4000)}`);
        await sleep(250);
      }
      const exposition = await httpGet(server.httpPort, '/metrics');
      assert.equal(Number(capacity[0]!.value[1]), Number(/^reapi_cas_capacity_bytes (\S+)$/m.exec(exposition)![1]));
      const up = await query('up{job="reapi-serve"}');
      assert.equal(up[0]?.value[1], '1');

      if (bazelRan) {
        const executed = await query('sum(reapi_actions_executed_total{job="reapi-serve"})');
        assert.ok(Number(executed[0]?.value[1]) > 0, JSON.stringify(executed));
        // The REAPI instance name is relabelled from exported_instance to instance_name.
        const lookups = await query('reapi_action_cache_requests_total{job="reapi-serve"}');
        assert.ok(lookups.length > 0);
        for (const s of lookups) {
          assert.equal(s.metric['instance_name'], 'main', JSON.stringify(s.metric));
          assert.equal(s.metric['exported_instance'], undefined);
        }
      }

      // Every rule loaded and evaluates without error against real data.
      let rules: Array<{ name: string; health: string; lastError?: string }> = [];
      for (const until = Date.now() + 15_000; ; ) {
        const { groups } = await api<{ groups: Array<{ rules: typeof rules }> }>('/api/v1/rules');
        rules = groups.flatMap((g) => g.rules);
        if (rules.length > 0 && rules.every((r) => r.health !== 'unknown')) break;
        if (Date.now() > until) break;
        await sleep(250);
      }
      assert.equal(rules.length, readRules(readFileSync(RULES, 'utf8')).length);
      assert.deepEqual(
        rules.filter((r) => r.health !== 'ok').map((r) => `${r.name}: ${r.health} ${r.lastError ?? ''}`),
        [],
      );

      // Every dashboard query runs against the real data (no matching errors at evaluation).
      for (const q of DASHBOARDS.flatMap(dashboardQueries)) {
        if (q.expr.startsWith('label_values(')) continue;
        const res = await fetch(`http://127.0.0.1:${port}/api/v1/query?query=${encodeURIComponent(grafanaToPromql(q.expr))}`);
        const body = (await res.json()) as { status: string; error?: string };
        assert.equal(body.status, 'success', `${q.dashboard} ${q.where}: ${body.error ?? ''}\n${q.expr}`);
      }
      prom.kill('SIGTERM');
      await exited;
    } finally {
      if (prom && prom.exitCode === null && prom.signalCode === null) {
        prom.kill('SIGKILL');
        await new Promise((r) => prom!.once('exit', r));
      }
      await rm(dir, { recursive: true, force: true });
    }
  });
});

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
