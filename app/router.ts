import type { Application } from 'egg';

export default (app: Application) => {
  const { router, controller, middleware, io } = app;
  const uuidAuth = middleware.uuidAuth();
  const kvAuth = middleware.kvAuth();

  router.get('/', controller.home.index);
  router.get('/check', controller.home.check);
  // Operations (CONTRACT §6.5): readiness and Prometheus metrics; not rate limited.
  router.get('/ready', controller.metrics.ready);
  router.get('/metrics', controller.metrics.show);

  // `/devices/online` is registered before `/devices/:uuid` (the original answered 404 here).
  router.post('/devices', controller.device.create);
  router.get('/devices/online', controller.device.online);
  router.get('/devices/:uuid', controller.device.show);
  router.put('/devices/:uuid/name', uuidAuth, controller.device.rename);
  router.post('/devices/:uuid/password', controller.device.setPassword);
  router.put('/devices/:uuid/password', uuidAuth, controller.device.changePassword);
  router.delete('/devices/:uuid/password', uuidAuth, controller.device.deletePassword);
  router.put('/devices/:uuid/password-hint', uuidAuth, controller.device.setPasswordHint);
  router.get('/devices/:uuid/password-hint', controller.device.getPasswordHint);

  router.post('/apps/devices/:uuid/install/:appId', uuidAuth, controller.apps.install);
  router.delete('/apps/devices/:uuid/uninstall/:installId', uuidAuth, controller.apps.uninstall);
  // These two disclose tokens: uuidAuth lets password-less devices through, as before.
  router.get('/apps/devices/:uuid/apps', uuidAuth, controller.apps.list);
  router.get('/apps/tokens', uuidAuth, controller.apps.tokens);

  router.post('/auth/device/code', controller.deviceAuth.create);
  router.post('/auth/device/bind', controller.deviceAuth.bind);
  router.get('/auth/device/token', controller.deviceAuth.token);
  router.get('/auth/device/status', controller.deviceAuth.status);

  // Reserved names first, then `:key`.
  router.get('/kv/_info', kvAuth, controller.kv.info);
  router.get('/kv/_keys', kvAuth, controller.kv.keys);
  router.post('/kv/_batchimport', kvAuth, controller.kv.batchImport);
  router.get('/kv', kvAuth, controller.kv.list);
  router.get('/kv/:key/metadata', kvAuth, controller.kv.metadata);
  router.get('/kv/:key', kvAuth, controller.kv.show);
  router.post('/kv/:key', kvAuth, controller.kv.upsert);
  router.delete('/kv/:key', kvAuth, controller.kv.destroy);

  io.of('/').route('join-token', io.controller.token.join);
  io.of('/').route('leave-token', io.controller.token.leave);
  io.of('/').route('leave-all', io.controller.token.leaveAll);
};
