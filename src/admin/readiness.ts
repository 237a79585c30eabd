// Readiness for load balancers, on the white's metrics listener: `GET /readyz` says the white is
// up (it answers only once it listens with a loaded config, and stops answering first when it
// stops); `GET /readyz/gray/<id>` says a client sent to this white for that gray would be served
// now: the gray has a live session here and at least one idle pooled connection. The answer is
// one line of text, so a person with curl and a load balancer's check log both read the reason.

/** What readiness needs to know of one gray on this white. */
export interface GrayReadiness {
  readonly connected: boolean;
  readonly poolIdle: number;
  readonly poolTarget: number;
}

export interface ReadinessAnswer {
  readonly status: 200 | 404 | 503;
  readonly text: string;
}

/** The answer for `/readyz/gray/<id>`; `gray` is undefined when the id is not in the config. */
export function grayReadiness(id: string, gray: GrayReadiness | undefined): ReadinessAnswer {
  if (gray === undefined) return { status: 404, text: `gray ${JSON.stringify(id)} is not in this white's config` };
  if (!gray.connected) return { status: 503, text: `gray ${JSON.stringify(id)} has no live session on this white` };
  if (gray.poolIdle < 1) return { status: 503, text: `gray ${JSON.stringify(id)} is connected but has no idle pooled connection (0 of ${gray.poolTarget})` };
  return { status: 200, text: `gray ${JSON.stringify(id)} is ready: ${gray.poolIdle} of ${gray.poolTarget} pooled connections idle` };
}
