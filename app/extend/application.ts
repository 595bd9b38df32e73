import type { Application } from 'egg';
import { KvEvents } from '../lib/kvEvents';
import { TokenCache } from '../lib/tokenCache';
import type { SharedState } from '../lib/state/types';
import type { Settings } from '../../config/env';

const KV_EVENTS = Symbol('Application#kvEvents');
const TOKEN_CACHE = Symbol('Application#tokenCache');
const SHARED_STATE = Symbol('Application#sharedState');

export default {
  /** Typed settings read from the environment (config/env.ts). */
  get settings(): Settings {
    return (this as unknown as Application).config.classworks;
  },

  get kvEvents(): KvEvents {
    const self = this as unknown as Record<symbol, KvEvents>;
    if (!self[KV_EVENTS]) {
      self[KV_EVENTS] = new KvEvents();
      self[KV_EVENTS].setMaxListeners(50);
    }
    return self[KV_EVENTS];
  },

  get tokenCache(): TokenCache {
    const self = this as unknown as Record<symbol, TokenCache>;
    if (!self[TOKEN_CACHE]) {
      const s = (this as unknown as Application).config.classworks;
      self[TOKEN_CACHE] = new TokenCache(s.tokenCacheTtlMs, s.tokenCacheMax, s.tokenNegativeCacheMs);
    }
    return self[TOKEN_CACHE];
  },

  /** Cross-worker state (Redis or in-process); created in app.ts. */
  get sharedState(): SharedState {
    const state = (this as unknown as Record<symbol, SharedState | undefined>)[SHARED_STATE];
    if (!state) throw new Error('shared state is not initialised yet');
    return state;
  },

  set sharedState(state: SharedState) {
    (this as unknown as Record<symbol, SharedState>)[SHARED_STATE] = state;
  },
};
