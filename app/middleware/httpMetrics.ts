import { performance } from 'node:perf_hooks';
import type { Context } from 'egg';

interface RouterLike {
  match(path: string, method: string): { route: boolean; pathAndMethod: Array<{ path: string; methods: string[] }> };
}

/**
 * The pattern of the route that answered (`/kv/:key`), or, for a request answered before
 * routing (rate limited, malformed body), of the route it was meant for; undefined when
 * no route has that path and method. Never the URL itself.
 */
function routeOf(ctx: Context): string | undefined {
  const matched = (ctx as { _matchedRoute?: string })._matchedRoute;
  if (matched !== undefined) return matched;
  const m = (ctx.app.router as unknown as RouterLike).match(ctx.path, ctx.method);
  // As the router would: the first route layer of that path and method answers.
  return m.route ? m.pathAndMethod.find(layer => layer.methods.length > 0)?.path : undefined;
}

/**
 * Counts every answered HTTP request by method, route pattern and status, and its
 * latency (app/lib/metrics.ts). The outermost middleware of ours (app.ts puts it before
 * errorHandler), so the status is the one sent, errors included. Unmatched requests
 * share one label. Socket.IO's transport requests never reach the HTTP stack.
 */
export default () => async function httpMetrics(ctx: Context, next: () => Promise<void>) {
  const start = performance.now();
  try {
    await next();
  } finally {
    ctx.app.metrics.observeHttp(ctx.method, routeOf(ctx), ctx.status, (performance.now() - start) / 1000);
  }
};
