import type { Application } from 'egg';

export default (app: Application) => {
  const { router, controller, middleware, io } = app;
  const uuidAuth = middleware.uuidAuth();
  const kvAuth = middleware.kvAuth();
  const accountAuth = middleware.accountAuth();
  const adminAuth = middleware.adminAuth();

  router.get('/', controller.home.index);
  router.get('/check', controller.home.check);
  // Operations (CONTRACT §6.5): readiness and Prometheus metrics; not rate limited.
  router.get('/ready', controller.metrics.ready);
  router.get('/metrics', controller.metrics.show);

  // `/devices/online` is registered before `/devices/:uuid` (the original answered 404 here).
  router.post('/devices', controller.device.create);
  // ADMIN_TOKEN, when set, guards the listing of online uuids (README: Deployment, Exposure).
  router.get('/devices/online', adminAuth, controller.device.online);
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
  // The token in the path authenticates (§6.2); counted per IP like every /apps route.
  router.post('/apps/tokens/:token/set-student-name', controller.tokens.setStudentName);
  router.post('/apps/tokens/:token/set-teacher-name', controller.tokens.setTeacherName);
  router.put('/apps/tokens/:token/note', controller.tokens.setNote);

  // Namespace login and auto-auth configs (§6.1). Managing configs takes device credentials
  // or the access token of the account the device is bound to (§8).
  router.post('/apps/auth/token', controller.autoAuth.token);
  const autoAuthManager = middleware.uuidAuth({ notBoundMessage: '该设备未绑定到您的账户' });
  router.get('/auto-auth/devices/:uuid/auth-configs', autoAuthManager, controller.autoAuth.list);
  router.post('/auto-auth/devices/:uuid/auth-configs', autoAuthManager, controller.autoAuth.create);
  router.put('/auto-auth/devices/:uuid/auth-configs/:configId', autoAuthManager, controller.autoAuth.update);
  router.delete('/auto-auth/devices/:uuid/auth-configs/:configId', autoAuthManager, controller.autoAuth.destroy);
  router.put('/auto-auth/devices/:uuid/namespace', autoAuthManager, controller.autoAuth.setNamespace);

  // Accounts (§8): OAuth sign-in, access/refresh tokens, devices bound to the account.
  router.get('/accounts/oauth/providers', controller.accounts.providers);
  router.get('/accounts/oauth/:provider', controller.accounts.authorize);
  router.get('/accounts/oauth/:provider/callback', controller.accounts.callback);
  router.get('/accounts/profile', accountAuth, controller.accounts.profile);
  router.get('/accounts/devices', accountAuth, controller.accounts.devices);
  router.post('/accounts/devices/bind', accountAuth, controller.accounts.bind);
  router.post('/accounts/devices/unbind', accountAuth, controller.accounts.unbind);
  router.get('/accounts/device/:uuid/account', controller.accounts.deviceAccount);
  router.post('/accounts/refresh', controller.accounts.refresh);
  router.post('/accounts/logout', accountAuth, controller.accounts.logout);
  router.post('/accounts/logout-all', accountAuth, controller.accounts.logoutAll);
  router.get('/accounts/token-info', accountAuth, controller.accounts.tokenInfo);

  router.post('/auth/device/code', controller.deviceAuth.create);
  router.post('/auth/device/bind', controller.deviceAuth.bind);
  router.get('/auth/device/token', controller.deviceAuth.token);
  router.get('/auth/device/status', controller.deviceAuth.status);

  // Reserved names first, then `:key`.
  router.get('/kv/_info', kvAuth, controller.kv.info);
  router.get('/kv/_token', kvAuth, controller.kv.token);
  router.get('/kv/_changes', kvAuth, controller.kv.changes);
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
  io.of('/').route('send-event', io.controller.event.send);
  io.of('/').route('get-event-history', io.controller.event.history);
};
