// Command-line options of the bench. Defaults are sized so the standard run stays under 3 minutes
// on 2 cores; --quick is for the smoke test.
import path from 'node:path';
import { REPO_ROOT } from './common.js';
import { WORKLOAD_IDS, type WorkloadId } from './plan.js';
import { DEFAULT_RELAY_CLI, type SpliceMode, TARGET_NAMES, type TargetName } from './targets.js';

export interface Options {
  mode: 'standard' | 'quick' | 'scale' | 'profile' | 'series';
  /** Standard (or quick) runs back to back, judged together when more than one (series.ts). */
  runs: number;
  /** --series: saved results files to judge together. */
  seriesFiles: string[];
  rounds: number;
  seconds: number;
  warmupSeconds: number;
  targets: TargetName[];
  workloads: WorkloadId[];
  outDir: string;
  haproxyBin: string;
  haproxySplice: SpliceMode;
  /** The wrk workload's load generator and service: names are looked up (and installed with apt-get when missing), paths used as they are. */
  wrkBin: string;
  nginxBin: string;
  relayCli: string;
  pool: number;
  /** Engine threads of relay's white and gray, and haproxy's nbthread per hop. */
  threads: number;
  readyTimeoutMs: number;
  scaleClients: number;
  scaleGrays: number;
  profileSide: 'white' | 'gray' | null;
  /** Measure the relay+authorize column (new connections only); --no-authorize turns it off. */
  authorize: boolean;
}

export const USAGE = `usage: npm run bench -- [options]      (or: node dist/bench/run.js [options])

  (no mode flag)        standard run: direct, haproxy chain and relay, all workloads, 3 rounds;
                        plus relay+authorize (relay asking an allow-all authorize hook before
                        each client) on the new-connection workload; the wrk workload (new
                        connections from wrk to nginx) installs wrk and nginx-light with
                        apt-get when they are missing
  --quick               a few seconds in total: 1 round, 0.3 s per workload (smoke test)
  --scale               idle-connection scale test (RSS per connection) and 1,000-gray white startup
  --profile white|gray  run that relay process under node --cpu-prof for the bulk, kept and new-connection workloads
  --series FILE...      judge the targets over saved results files of standard runs (median of
                        each target over the runs, its range, the runs that met it); runs nothing

  --runs N              N standard runs back to back, then the targets judged over them as
                        --series does, written to series-<time>.json (default 1)
  --rounds N            rounds per figure (default 3; quick 1)
  --seconds S           seconds per workload measurement (default 1.5; quick 0.3)
  --targets LIST        comma list of direct,haproxy,relay,relay+authorize (default all)
  --workloads LIST      comma list of ${WORKLOAD_IDS.join(',')}
                        (default all)
  --no-authorize        skip the relay+authorize column
  --out DIR             where results go (default bench/results)
  --haproxy BIN         haproxy binary (default: haproxy on PATH)
  --haproxy-splice M    auto (option splice-auto, default), always (splice-request/response), off
  --wrk BIN             wrk binary (default: wrk on PATH, installed when missing)
  --nginx BIN           nginx binary (default: nginx on PATH or in /usr/sbin, installed when missing)
  --relay-cli FILE      relay CLI script (default dist/src/cli/relay.js)
  --pool N              gray pool size for relay (default 64)
  --threads N           engine threads in relay's white and gray (engine.threads) and nbthread
                        of each haproxy hop (default 1)
  --scale-clients N     idle clients in --scale (default 10000; capped by ulimit -n)
  --scale-grays N       grays in the startup test of --scale (default 1000)
  -h, --help            this text
`;

export function parseArgs(argv: readonly string[]): Options {
  const o: Options = {
    mode: 'standard',
    runs: 1,
    seriesFiles: [],
    rounds: 3,
    seconds: 1.5,
    warmupSeconds: 0.25,
    targets: [...TARGET_NAMES],
    workloads: [...WORKLOAD_IDS],
    outDir: path.join(REPO_ROOT, 'bench/results'),
    haproxyBin: 'haproxy',
    haproxySplice: 'auto',
    wrkBin: 'wrk',
    nginxBin: 'nginx',
    relayCli: DEFAULT_RELAY_CLI,
    pool: 64,
    threads: 1,
    readyTimeoutMs: 20_000,
    scaleClients: 10_000,
    scaleGrays: 1000,
    profileSide: null,
    authorize: true,
  };
  let rounds: number | null = null;
  let seconds: number | null = null;
  const args = [...argv];
  const value = (flag: string): string => {
    const v = args.shift();
    if (v === undefined || v.startsWith('--')) throw new Error(`${flag} needs a value`);
    return v;
  };
  const positive = (flag: string, v: string, int = true): number => {
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0 || (int && !Number.isInteger(n))) throw new Error(`${flag}: expected a positive ${int ? 'integer' : 'number'}, got ${JSON.stringify(v)}`);
    return n;
  };
  while (args.length > 0) {
    const a = args.shift()!;
    switch (a) {
      case '--quick':
        o.mode = 'quick';
        break;
      case '--scale':
        o.mode = 'scale';
        break;
      case '--profile': {
        const side = value(a);
        if (side !== 'white' && side !== 'gray') throw new Error(`--profile: expected white or gray, got ${JSON.stringify(side)}`);
        o.mode = 'profile';
        o.profileSide = side;
        break;
      }
      case '--series':
        o.mode = 'series';
        // Every argument up to the next option is a file.
        while (args.length > 0 && !args[0]!.startsWith('--')) o.seriesFiles.push(path.resolve(args.shift()!));
        if (o.seriesFiles.length === 0) throw new Error('--series needs at least one results file');
        break;
      case '--runs':
        o.runs = positive(a, value(a));
        break;
      case '--rounds':
        rounds = positive(a, value(a));
        break;
      case '--seconds':
        seconds = positive(a, value(a), false);
        break;
      case '--targets': {
        const list = value(a).split(',').map((s) => s.trim()).filter(Boolean);
        for (const t of list) if (!TARGET_NAMES.includes(t as TargetName)) throw new Error(`--targets: unknown target ${JSON.stringify(t)}`);
        o.targets = list as TargetName[];
        break;
      }
      case '--workloads': {
        const list = value(a).split(',').map((s) => s.trim()).filter(Boolean);
        for (const w of list) if (!WORKLOAD_IDS.includes(w as WorkloadId)) throw new Error(`--workloads: unknown workload ${JSON.stringify(w)}`);
        // Always in the standard order, so the table and the JSON read the same whatever was asked.
        o.workloads = WORKLOAD_IDS.filter((w) => list.includes(w));
        break;
      }
      case '--out':
        o.outDir = path.resolve(value(a));
        break;
      case '--haproxy':
        o.haproxyBin = value(a);
        break;
      case '--haproxy-splice': {
        const v = value(a);
        if (v !== 'auto' && v !== 'always' && v !== 'off') throw new Error(`--haproxy-splice: expected auto, always or off, got ${JSON.stringify(v)}`);
        o.haproxySplice = v;
        break;
      }
      case '--wrk':
        o.wrkBin = value(a);
        break;
      case '--nginx':
        o.nginxBin = value(a);
        break;
      case '--no-authorize':
        o.authorize = false;
        break;
      case '--relay-cli':
        o.relayCli = path.resolve(value(a));
        break;
      case '--pool':
        o.pool = positive(a, value(a));
        break;
      case '--threads':
        o.threads = positive(a, value(a));
        break;
      case '--scale-clients':
        o.scaleClients = positive(a, value(a));
        break;
      case '--scale-grays':
        o.scaleGrays = positive(a, value(a));
        break;
      case '-h':
      case '--help':
        process.stdout.write(USAGE);
        process.exit(0);
        break;
      default:
        throw new Error(`unknown option ${JSON.stringify(a)}\n${USAGE}`);
    }
  }
  if (o.runs > 1 && o.mode !== 'standard' && o.mode !== 'quick') throw new Error(`--runs: only standard and --quick runs repeat, not --${o.mode}`);
  if (o.mode === 'quick') {
    o.rounds = 1;
    o.seconds = 0.3;
    o.warmupSeconds = 0.05;
    o.readyTimeoutMs = 30_000; // a deadline only: on a loaded machine (the test suite) startup can take seconds
  }
  if (!o.authorize) o.targets = o.targets.filter((t) => t !== 'relay+authorize');
  if (rounds !== null) o.rounds = rounds;
  if (seconds !== null) {
    o.seconds = seconds;
    o.warmupSeconds = Math.min(o.warmupSeconds, seconds / 5);
  }
  return o;
}
