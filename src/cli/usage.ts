// Help texts. Kept apart from the parsing so they read as documentation.
export const RELAY_USAGE = `relay — reverse TCP tunnel

Usage:
  relay white  --config white.yaml [--no-console] [per-host flags]
                                                  run the white server (public side)
  relay gray   --config gray.yaml                 run a gray agent (behind NAT)
  relay demo                                      white + gray + a local service on loopback
  relay verify --config FILE                      check a white or gray config and exit
  relay --version | --help | <command> --help

Exit codes: 0 ok, 1 runtime failure, 2 usage or config error.
Logs: JSON lines on stdout (RELAY_LOG_LEVEL=debug|info|warn|error overrides the config).
`;

export const COMMAND_USAGE: Record<string, string> = {
  white: `relay white --config white.yaml [--console | --no-console]
            [--bind HOST] [--control-listen HOST:PORT] [--admin-socket PATH] [--metrics-listen HOST:PORT]

Runs the white server: the TLS control port shared by all grays, and for every gray in the
config its public_port (Internet clients) and data_port (that gray's pool). The config file is
watched: editing it adds, moves and removes grays live. SIGHUP reloads too.
  --config, -c   path of the white config (YAML)
  --console      read /add, /show, /delete, /help commands on stdin (default when stdin is a TTY)
  --no-console   never read stdin (for a white started in the background of a terminal)

Per-host settings, for several whites run from one shared file (docs/ha.md). Each replaces
the file's key, at start and on every reload:
  --bind HOST                  bind (the address every public and data listener binds to)
  --control-listen HOST:PORT   control.listen
  --admin-socket PATH          admin.socket (relative to the current directory; relayctl show
                               then needs --socket PATH)
  --metrics-listen HOST:PORT   metrics.listen (also serves /readyz and /readyz/gray/<id>)
`,
  gray: `relay gray --config gray.yaml

Runs a gray agent: dials the white over TLS, proves its id, keeps a pool of pre-opened data
connections and forwards each client to the local target. Reconnects forever with backoff.
  --config, -c   path of the gray config (YAML)
`,
  demo: `relay demo

Starts a white server, a gray agent and a small HTTP service on 127.0.0.1 in one process and
prints a curl line to try. Ctrl-C stops everything.
`,
  verify: `relay verify --config FILE

Checks a white or gray config file (YAML syntax, schema, ports, secrets) without starting
anything. Exit 0 when valid, 2 with every error listed when not.
  --config, -c   path of the config to check
`,
};
