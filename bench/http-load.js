'use strict';

/**
 * HTTP load generator (child process of bench/run.js): one autocannon run, result
 * sent back over IPC.
 *
 * egg's sticky master picks the worker from the client's source address, and
 * autocannon cannot bind one; so this process wraps net.connect and gives the
 * connections source addresses in turn from `addresses` (127.0.0.2 and 127.0.0.3:
 * one per worker). Half the connections therefore land on each worker, and a
 * reconnecting connection keeps alternating the same way.
 *
 * Message in:  { url, connections, duration, addresses, method, path, body?, tokens }
 *   tokens: KV tokens; connection i sends tokens[i % tokens.length] (one token: all share it).
 * Message out: { result } (the fields of autocannon's result we report) or { error }.
 */
const net = require('net');
const autocannon = require('autocannon');

function bindSourceAddresses(addresses) {
  const original = net.connect;
  let i = 0;
  net.connect = function connect(port, host, ...rest) {
    // autocannon calls net.connect(port, hostname) with the port as a string.
    if ((typeof port === 'number' || typeof port === 'string') && typeof host === 'string' && rest.length === 0) {
      return original.call(net, { port: Number(port), host, localAddress: addresses[i++ % addresses.length] });
    }
    return original.call(net, port, host, ...rest);
  };
}

function run(opts) {
  bindSourceAddresses(opts.addresses);
  let next = 0;
  const request = {
    method: opts.method,
    path: opts.path,
    headers: opts.body === undefined ? {} : { 'content-type': 'application/json' },
    body: opts.body,
    setupRequest(req, context) {
      if (!context.token) context.token = opts.tokens[next++ % opts.tokens.length];
      req.headers = { ...req.headers, 'x-app-token': context.token };
      return req;
    },
  };
  return new Promise((resolve, reject) => {
    autocannon({
      url: opts.url,
      connections: opts.connections,
      duration: opts.duration,
      pipelining: 1,
      timeout: 10,
      requests: [ request ],
    }, (err, result) => (err ? reject(err) : resolve(result)));
  });
}

process.once('message', async opts => {
  try {
    const r = await run(opts);
    process.send({
      result: {
        reqPerSec: r.requests.average,
        totalRequests: r.requests.total,
        p50: r.latency.p50,
        p99: r.latency.p99,
        max: r.latency.max,
        errors: r.errors,
        timeouts: r.timeouts,
        non2xx: r.non2xx,
        statusCodeStats: r.statusCodeStats,
        duration: r.duration,
        loadGeneratorCpuSeconds: Math.round((process.cpuUsage().user + process.cpuUsage().system) / 1e4) / 100,
      },
    }, () => process.exit(0));
  } catch (err) {
    process.send({ error: err.stack || String(err) }, () => process.exit(1));
  }
});
