'use strict';

/** Test data created through the public API, as a client would. */
const { request } = require('./common');

async function createDeviceWithToken(base, uuid) {
  const d = await request(base, 'POST', '/devices', { body: { uuid, deviceName: uuid } });
  if (d.status !== 201) throw new Error(`POST /devices ${d.status} ${d.text}`);
  const a = await request(base, 'POST', `/apps/devices/${encodeURIComponent(uuid)}/install/bench`, { body: {} });
  if (a.status !== 201) throw new Error(`install ${a.status} ${a.text}`);
  return a.body.token;
}

async function post(base, token, key, value) {
  const r = await request(base, 'POST', `/kv/${encodeURIComponent(key)}`, { body: value, headers: { 'x-app-token': token } });
  if (r.status !== 200) throw new Error(`POST /kv/${key} ${r.status} ${r.text}`);
  return r;
}

async function batchImport(base, token, entries) {
  const r = await request(base, 'POST', '/kv/_batchimport', { body: entries, headers: { 'x-app-token': token } });
  if (r.status !== 200) throw new Error(`batch import ${r.status} ${r.text}`);
  return r;
}

/** A small, typical value (~110 bytes of JSON). */
const sampleValue = n => ({ title: `item ${n}`, done: n % 2 === 0, tags: [ 'bench', 'kv' ], updatedBy: 'bench', n });

module.exports = { createDeviceWithToken, post, batchImport, sampleValue };
