import { Controller } from 'egg';
import { HttpError } from '../lib/errors';
import { Metrics } from '../lib/metrics';
import { bearerToken, sameSecret } from '../lib/secret';

/** Operations endpoints: `GET /metrics` and `GET /ready` (CONTRACT §6.5). */
export default class MetricsController extends Controller {
  /** Prometheus text format; `METRICS_TOKEN`, when set, from `Authorization: Bearer` or `?token=`. */
  async show() {
    const { ctx } = this;
    const expected = this.app.settings.metricsToken;
    if (expected && !this.authorized(expected)) {
      // The contract fixes this body (not the conventions' error body).
      ctx.status = 401;
      ctx.set('WWW-Authenticate', 'Bearer realm="metrics"');
      ctx.body = { error: 'Unauthorized', message: 'Valid metrics token required' };
      return;
    }
    const text = await ctx.service.metrics.render();
    ctx.body = text;
    ctx.set('Content-Type', Metrics.contentType);
    ctx.set('Cache-Control', 'no-store');
  }

  private authorized(expected: string): boolean {
    const bearer = bearerToken(this.ctx.get('authorization'));
    if (bearer && sameSecret(bearer, expected)) return true;
    const query = this.ctx.query.token;
    return typeof query === 'string' && query !== '' && sameSecret(query, expected);
  }

  /** 200 when the database (and Redis, when configured) answer a probe; 503 naming what is down. */
  async ready() {
    const health = await this.ctx.service.metrics.health();
    const redisDown = health.redis === false;
    if (health.database && !redisDown) {
      this.ctx.body = { status: 'ready' };
      return;
    }
    const message = !health.database && redisDown ? '数据库和 Redis 服务不可用，请稍后重试'
      : !health.database ? '数据库服务不可用，请稍后重试' : 'Redis 服务不可用，请稍后重试';
    throw new HttpError(503, message, {
      code: 'SERVICE_UNAVAILABLE',
      details: {
        database: health.database ? 'up' : 'down',
        redis: health.redis === undefined ? 'not_configured' : health.redis ? 'up' : 'down',
      },
    });
  }
}
