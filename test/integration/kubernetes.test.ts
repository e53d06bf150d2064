// deploy/kubernetes: the base renders with `kubectl kustomize`, every object validates against the
// schema of its kind (kubernetes-models, the Prometheus operator's models), the generated objects
// are current, and what the objects say agrees with reapi: every container's arguments are a
// valid configuration of its role, ports and selectors line up, storage nodes are addressed by
// their stable names.
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, test } from 'node:test';
import { parseAllDocuments } from 'yaml';
import * as apps from 'kubernetes-models/apps/v1';
import * as autoscaling from 'kubernetes-models/autoscaling/v2';
import * as core from 'kubernetes-models/v1';
import * as policy from 'kubernetes-models/policy/v1';
import * as monitoring from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1';
import { configFromFlags, type CommonFlags } from '../../cli/flags.ts';
import { createGuard } from '../../common/auth/index.ts';
import { generated } from '../../deploy/kubernetes/generate.ts';
import { findOnPath } from '../support/commands.ts';

const BASE = fileURLToPath(new URL('../../deploy/kubernetes/base', import.meta.url));

type K8sObject = { apiVersion: string; kind: string; metadata: { name: string; labels?: Record<string, string> }; spec?: Record<string, unknown>; [k: string]: unknown };

const MODELS: Record<string, new (o: never) => { validate(): void }> = {
  'v1/Namespace': core.Namespace,
  'v1/Service': core.Service,
  'v1/ConfigMap': core.ConfigMap,
  'v1/Secret': core.Secret,
  'apps/v1/Deployment': apps.Deployment,
  'apps/v1/StatefulSet': apps.StatefulSet,
  'policy/v1/PodDisruptionBudget': policy.PodDisruptionBudget,
  'autoscaling/v2/HorizontalPodAutoscaler': autoscaling.HorizontalPodAutoscaler,
  'monitoring.coreos.com/v1/ServiceMonitor': monitoring.ServiceMonitor,
  'monitoring.coreos.com/v1/PrometheusRule': monitoring.PrometheusRule,
};

function render(): K8sObject[] {
  const out = execFileSync('kubectl', ['kustomize', BASE], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  return parseAllDocuments(out).map((d) => d.toJSON() as K8sObject).filter(Boolean);
}

/** commander-style flags from container args (`--a=b`, `--a b`, `--flag`). */
function flagsOf(args: string[]): { role: string; flags: CommonFlags } {
  const [role, ...rest] = args;
  const flags: Record<string, string | boolean> = {};
  for (let i = 0; i < rest.length; i++) {
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(rest[i]!);
    assert.ok(m, `unexpected argument ${rest[i]}`);
    const key = m[1]!.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
    if (m[2] !== undefined) flags[key] = m[2];
    else if (rest[i + 1] !== undefined && !rest[i + 1]!.startsWith('--')) flags[key] = rest[++i]!;
    else flags[key] = true;
  }
  return { role: role!, flags: flags as CommonFlags };
}

describe('deploy/kubernetes', { skip: !findOnPath('kubectl') && 'kubectl is not installed' }, () => {
  test('the generated objects (alert rules, dashboards) are current', () => {
    for (const [name, text] of Object.entries(generated())) assert.equal(readFileSync(join(BASE, name), 'utf8'), text, `${name} is stale: run npm run gen:kubernetes`);
  });

  test('the base renders, and every object validates against its kind\u2019s schema', () => {
    const objects = render();
    const kinds = objects.map((o) => `${o.apiVersion}/${o.kind}`).sort();
    for (const want of ['apps/v1/StatefulSet', 'apps/v1/Deployment', 'policy/v1/PodDisruptionBudget', 'autoscaling/v2/HorizontalPodAutoscaler', 'monitoring.coreos.com/v1/ServiceMonitor', 'monitoring.coreos.com/v1/PrometheusRule']) {
      assert.ok(kinds.includes(want), `the base has a ${want}`);
    }
    for (const o of objects) {
      const Model = MODELS[`${o.apiVersion}/${o.kind}`];
      assert.ok(Model, `no schema for ${o.apiVersion} ${o.kind}`);
      new Model(o as never).validate();
      assert.equal(o.metadata.labels?.['app.kubernetes.io/part-of'], 'reapi', `${o.kind}/${o.metadata.name} carries the common label`);
    }
  });

  test('every container runs a valid reapi configuration, and ports, selectors and names line up', () => {
    const objects = render();
    const byKind = (kind: string) => objects.filter((o) => o.kind === kind);
    // The Secret the pods mount is the operator's; any token will do here.
    const tokenFile = join(mkdtempSync(join(tmpdir(), 'reapi-k8s-')), 'fleet.token');
    writeFileSync(tokenFile, 'a-fleet-token-of-at-least-16-chars');
    const services = byKind('Service');
    const cas = byKind('StatefulSet').find((s) => s.metadata.name === 'reapi-cas')!;
    const casReplicas = (cas.spec as { replicas: number }).replicas;
    const casNames = Array.from({ length: casReplicas }, (_, i) => `reapi-cas-${i}.reapi-cas:8990`);
    for (const w of [...byKind('Deployment'), ...byKind('StatefulSet')]) {
      const spec = w.spec as { selector: { matchLabels: Record<string, string> }; template: { metadata: { labels: Record<string, string> }; spec: { containers: Array<{ args?: string[]; command?: string[]; ports?: Array<{ name: string; containerPort: number }> }> } } };
      for (const [k, v] of Object.entries(spec.selector.matchLabels)) assert.equal(spec.template.metadata.labels[k], v, `${w.metadata.name}: the selector matches its pods`);
      for (const c of spec.template.spec.containers) {
        if (!c.args) continue;
        const { role, flags } = flagsOf(c.args);
        // The files the pod mounts (the ConfigMap and the Secret) are the ones in the base.
        const full = configFromFlags({ ...flags, config: join(BASE, 'reapi.json'), fleetTokenFile: tokenFile }, role);
        createGuard(full); // listening on 0.0.0.0 is allowed (--insecure here; TLS in overlays)
        const ports = new Map((c.ports ?? []).map((p) => [p.name, p.containerPort]));
        if (role !== 'worker') assert.equal(ports.get('grpc'), full.port, `${w.metadata.name}: gRPC port`);
        assert.equal(ports.get('http'), full.httpPort, `${w.metadata.name}: HTTP port`);
        if (role === 'scheduler' || role === 'worker') assert.deepEqual(full.cas, casNames, `${w.metadata.name} reaches every storage node by its stable name`);
      }
      const service = services.find((s) => {
        const sel = (s.spec as { selector?: Record<string, string> }).selector ?? {};
        return Object.entries(sel).every(([k, v]) => spec.template.metadata.labels[k] === v);
      });
      assert.ok(service, `${w.metadata.name} has a Service`);
      const ports = (service.spec as { ports: Array<{ targetPort: string }> }).ports.map((p) => p.targetPort);
      const named = new Set(spec.template.spec.containers.flatMap((c) => (c.ports ?? []).map((p) => p.name)));
      for (const p of ports) assert.ok(named.has(p), `${service.metadata.name}: targetPort ${p} is a named container port`);
    }
    const hpa = byKind('HorizontalPodAutoscaler')[0]!;
    assert.equal((hpa.spec as { scaleTargetRef: { name: string } }).scaleTargetRef.name, 'reapi-worker');
    const rules = byKind('PrometheusRule')[0]!;
    const alerts = JSON.stringify(rules.spec);
    assert.match(alerts, /reapi_cache_poisoning_suspected_total/);
  });
});
