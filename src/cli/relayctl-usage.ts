// relayctl's help texts, kept apart from the parsing so they read as documentation.
export const RELAYCTL_USAGE = `relayctl — manage a relay white server's grays

Usage:
  relayctl add <id> [options]      register a gray in white.yaml; its gray.yaml to --out FILE or stdout
  relayctl delete <id> [options]   remove a gray from white.yaml
  relayctl service add|delete <gray> <name> [--allow CIDR]...   add or remove a service of a gray
  relayctl show [--json]           live state of the running white (admin socket)
  relayctl reload                  ask the running white to reload its file now
  relayctl --version | --help | <command> --help

The config file is --config FILE, else $RELAY_CONFIG, else ./white.yaml. add and delete edit the
file (comments kept, validated, atomic); the running white applies the edit by itself.
Exit codes: 0 ok, 1 runtime failure (e.g. the white is not running), 2 usage or config error.
`;

export const RELAYCTL_COMMAND_USAGE: Record<string, string> = {
  add: `relayctl add <id> [--out FILE] [--public-port N] [--data-port N] [--white host:port] [--target host:port | --service name=host:port ...] [--config FILE]

Adds gray <id> to the white's config with a fresh 256-bit secret, then writes the gray.yaml to
give to that gray's operator (it contains the secret) and prints a summary on stderr:
  relayctl add shop --target 127.0.0.1:8080 --out shop-gray.yaml
  --out, -o FILE    write the gray.yaml to FILE, a new file of mode 0600 (never overwritten);
                    without it, the gray.yaml goes to stdout
  --public-port N   port Internet clients use (default: the next free one in ports.range)
  --data-port N     port the gray's pool dials (default: the next free one in ports.range)
  --white host:port the white's control address as the gray reaches it
                    (default: control.listen, or this host's name when that is a wildcard)
  --target host:port  the gray's local service (default: a placeholder to edit)
  --service name=host:port  a named service (repeat for several): each gets a public port
                    from ports.range, and the gray.yaml lists them under services
  --config, -c FILE the white config (default $RELAY_CONFIG or ./white.yaml)
`,
  delete: `relayctl delete <id> [--config FILE]

Removes gray <id> from the white's config. On its next reload the white closes that gray's
ports, its control session and its clients.
  --config, -c FILE the white config (default $RELAY_CONFIG or ./white.yaml)
`,
  service: `relayctl service add|delete <gray> <name> [--allow CIDR]... [--public-port N] [--config FILE]

Adds a service to an existing gray (a public port from ports.range unless --public-port; with
--allow, only those client networks may connect), or removes one (its active clients finish).
A gray written with public_port becomes a list whose first service is "default". The file is
edited like add's (comments kept, validated, atomic); the running white applies it; give the
gray's file the same service (services: <name>: { target: "host:port" }).
  --allow CIDR      a client network allowed on the port, IPv4 or IPv6 (repeat for several)
  --public-port N   the service's public port (default: the next free one in ports.range)
  --config, -c FILE the white config (default $RELAY_CONFIG or ./white.yaml)
`,
  show: `relayctl show [--json] [--config FILE] [--socket PATH] [--timeout SECONDS]

Shows the running white's live state: every gray with its ports, whether it is connected and
since when, its address, pool, clients, bytes and last error; then the last reload's result
and the webhook delivery counts.
  --json            print the state document as JSON instead of a table
  --socket PATH     the admin socket (default: admin.socket from the config)
  --timeout SECONDS give up after this long, exit 1 (default 10)
  --config, -c FILE the white config (default $RELAY_CONFIG or ./white.yaml)
`,
  reload: `relayctl reload [--config FILE] [--socket PATH] [--timeout SECONDS]

Asks the running white to reload its config file now (as a save or SIGHUP would) and prints the
outcome. Exit 0 when applied, 2 when the file was rejected (the running config stays).
  --socket PATH     the admin socket (default: admin.socket from the config)
  --timeout SECONDS give up after this long, exit 1 (default 35)
  --config, -c FILE the white config (default $RELAY_CONFIG or ./white.yaml)
`,
};
