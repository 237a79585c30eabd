// The Kubernetes example (deploy/kubernetes/): every manifest validates against the Kubernetes API
// schemas (kubernetes-models, ajv, offline), the pieces refer to each other correctly, and the
// shared white.yaml inside the ConfigMap is a valid white config.
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { StatefulSet } from 'kubernetes-models/apps/v1';
import { ConfigMap, Namespace, Secret, Service } from 'kubernetes-models/v1';
import { parseAllDocuments } from 'yaml';
import { parseWhiteConfig } from '../../src/config/load.js';

const DIR = fileURLToPath(new URL('../../../deploy/kubernetes/', import.meta.url));

type Doc = Record<string, unknown> & { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; labels?: Record<string, string> } };

/** apiVersion/kind → a validator that throws with the schema's message. */
const MODELS: Record<string, (doc: Doc) => void> = {
  'v1/Namespace': (d) => new Namespace(d as never).validate(),
  'v1/ConfigMap': (d) => new ConfigMap(d as never).validate(),
  'v1/Secret': (d) => new Secret(d as never).validate(),
  'v1/Service': (d) => new Service(d as never).validate(),
  'apps/v1/StatefulSet': (d) => new StatefulSet(d as never).validate(),
};

async function manifests(): Promise<Array<{ file: string; doc: Doc }>> {
  const out: Array<{ file: string; doc: Doc }> = [];
  for (const file of (await readdir(DIR)).filter((f) => f.endsWith('.yaml')).sort()) {
    for (const d of parseAllDocuments(await readFile(join(DIR, file), 'utf8'))) {
      assert.equal(d.errors.length, 0, `${file}: ${d.errors.map((e) => e.message).join('; ')}`);
      out.push({ file, doc: d.toJS() as Doc });
    }
  }
  return out;
}

describe('deploy/kubernetes', () => {
  it('every manifest validates against the Kubernetes API schema', async () => {
    const all = await manifests();
    assert.ok(all.length >= 6, `found ${all.length} manifests`);
    for (const { file, doc } of all) {
      const validate = MODELS[`${doc.apiVersion}/${doc.kind}`];
      assert.ok(validate, `${file}: no schema for ${doc.apiVersion} ${doc.kind}`);
      assert.doesNotThrow(() => validate(doc), `${file}: ${doc.kind} ${doc.metadata.name}`);
    }
  });

  it('the validator is real: a broken StatefulSet and Service are refused', async () => {
    const sts = (await manifests()).find((m) => m.doc.kind === 'StatefulSet')!.doc;
    const broken = structuredClone(sts) as Doc & { spec: { replicas: unknown } };
    broken.spec.replicas = 'three';
    assert.throws(() => MODELS['apps/v1/StatefulSet']!(broken), /replicas must be integer/);
    const svc = (await manifests()).find((m) => m.doc.kind === 'Service')!.doc as Doc & { spec: { ports: Array<{ port: unknown }> } };
    const badSvc = structuredClone(svc);
    badSvc.spec.ports[0]!.port = 'http';
    assert.throws(() => MODELS['v1/Service']!(badSvc), /port must be integer/);
  });

  it('the pieces fit: selectors, probes, named ports, the headless Service, secrets by env', async () => {
    const all = (await manifests()).map((m) => m.doc);
    const sts = all.find((d) => d.kind === 'StatefulSet') as Doc & { spec: any };
    const services = all.filter((d) => d.kind === 'Service') as Array<Doc & { spec: any }>;
    const podLabels = sts.spec.template.metadata.labels as Record<string, string>;
    for (const [k, v] of Object.entries(sts.spec.selector.matchLabels as Record<string, string>)) assert.equal(podLabels[k], v);
    const container = sts.spec.template.spec.containers[0];
    const portNames = new Set((container.ports as Array<{ name: string }>).map((p) => p.name));
    const headless = services.find((s) => s.spec.clusterIP === 'None')!;
    assert.equal(sts.spec.serviceName, headless.metadata.name);
    assert.equal(headless.spec.publishNotReadyAddresses, true, 'grays must reach whites that are not ready yet');
    assert.equal(sts.spec.podManagementPolicy, 'Parallel');
    for (const svc of services) {
      for (const [k, v] of Object.entries(svc.spec.selector as Record<string, string>)) assert.equal(podLabels[k], v, `${svc.metadata.name} selects the white pods`);
      for (const p of svc.spec.ports as Array<{ targetPort: string }>) assert.ok(portNames.has(p.targetPort), `${svc.metadata.name}: port ${p.targetPort} exists on the pod`);
    }
    assert.match(container.readinessProbe.httpGet.path, /^\/readyz\/gray\/[A-Za-z0-9._-]+$/);
    assert.ok(portNames.has(container.readinessProbe.httpGet.port));
    for (const d of all) if (d.kind !== 'Namespace') assert.equal(d.metadata.namespace, 'relay', `${d.kind} ${d.metadata.name}`);

    // The shared file: a valid white config whose ports are the pod's, whose secrets come from
    // the Secret through the container's environment.
    const cm = all.find((d) => d.kind === 'ConfigMap') as Doc & { data: Record<string, string> };
    const args = container.args as string[];
    const configPath = args[args.indexOf('--config') + 1]!;
    const mount = (container.volumeMounts as Array<{ name: string; mountPath: string }>).find((m) => configPath.startsWith(`${m.mountPath}/`))!;
    const text = cm.data[configPath.slice(mount.mountPath.length + 1)]!;
    const secret = all.find((d) => d.kind === 'Secret') as Doc & { stringData: Record<string, string> };
    const env: Record<string, string> = {};
    for (const e of container.env as Array<{ name: string; valueFrom: { secretKeyRef: { name: string; key: string } } }>) {
      assert.equal(e.valueFrom.secretKeyRef.name, secret.metadata.name);
      assert.ok(e.valueFrom.secretKeyRef.key in secret.stringData);
      env[e.name] = 'kZ1iQw2lWk3oPq9sUeM0bVn7XcR5tY8aDf4gHj6kLzA';
    }
    const white = await parseWhiteConfig(text, '/etc/relay/config/white.yaml', { env });
    const containerPorts = new Map((container.ports as Array<{ name: string; containerPort: number }>).map((p) => [p.name, p.containerPort]));
    assert.equal(white.control.port, containerPorts.get('control'));
    assert.equal(white.metrics?.port, containerPorts.get('metrics'));
    for (const g of white.grays) {
      assert.equal(containerPorts.get(`public-${g.id}`), g.services[0]!.publicPort);
      assert.equal(containerPorts.get(`data-${g.id}`), g.dataPort);
    }
    // The shipped placeholder is not a secret: a white started with it refuses to run.
    await assert.rejects(parseWhiteConfig(text, null, { env: { RELAY_SECRET_OFFICE_NAS: Object.values(secret.stringData)[0]! } }));
  });
});
