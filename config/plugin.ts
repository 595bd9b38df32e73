import type { EggPlugin } from 'egg';
import { loadSettings } from './env';

const settings = loadSettings();

const plugin: EggPlugin = {
  sequelize: { enable: true, package: 'egg-sequelize' },
  // Without REDIS_URL the server runs embedded: in-process state, one worker.
  redis: { enable: !!settings.redisUrl, package: 'egg-redis' },
  io: { enable: true, package: 'egg-socket.io' },
  validate: { enable: true, package: 'egg-validate' },
  cors: { enable: true, package: 'egg-cors' },
  // Not used by a token-authenticated JSON API.
  view: false,
  i18n: false,
  static: false,
  jsonp: false,
  multipart: false,
};

export default plugin;
