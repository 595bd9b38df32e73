import assert from 'node:assert';
import { isoDate, listPageJson } from '../../../app/service/kv';

/** The page as objects, serialised the ordinary way: what listPageJson() must write byte for byte. */
function reference(deviceId: number, rows: Parameters<typeof listPageJson>[1], total: number, more: { load_more?: string }) {
  return JSON.stringify({
    items: rows.map(r => ({
      deviceId,
      key: r.key,
      metadata: { creatorIp: r.creatorIp ?? '', createdAt: isoDate(r.createdAt), updatedAt: isoDate(r.updatedAt) },
    })),
    total_rows: total,
    ...more,
  });
}

describe('listPageJson()', () => {
  const rows = [
    { key: 'plain', creatorIp: '127.0.0.1', createdAt: '2026-12-06 10:00:00.123', updatedAt: '2026-12-06 10:00:01.456' },
    { key: 'quote " backslash \\ slash /', creatorIp: null, createdAt: new Date(Date.UTC(2025, 0, 2, 3, 4, 5, 6)), updatedAt: '2025-01-02 03:04:05.006' },
    { key: 'ctrl \u0001\b\f\n\r\t \u001f del \u007f', creatorIp: '::1', createdAt: '2026-01-01T00:00:00.000Z', updatedAt: '2026-01-01 00:00:00.000' },
    { key: '中文 ключ 🚀 \u2028\u2029', creatorIp: '', createdAt: '2026-12-06 10:00:00.000', updatedAt: '2026-12-06 10:00:00.999' },
    { key: '__proto__', creatorIp: '10.0.0.1', createdAt: '2026-12-06 10:00:00.000', updatedAt: '2026-12-06 10:00:00.000' },
  ];

  it('writes the same text as JSON.stringify of the page objects', () => {
    for (const more of [{}, { load_more: '/kv?sortBy=key&sortDir=asc&limit=2&skip=2' }]) {
      const text = listPageJson(42, rows, 7, more);
      assert.strictEqual(text, reference(42, rows, 7, more));
      assert.deepStrictEqual(Object.keys(JSON.parse(text)), more.load_more ? [ 'items', 'total_rows', 'load_more' ] : [ 'items', 'total_rows' ]);
    }
  });

  it('an empty page', () => {
    assert.strictEqual(listPageJson(1, [], 0, {}), '{"items":[],"total_rows":0}');
    assert.strictEqual(listPageJson(1, [], 5, {}), reference(1, [], 5, {}));
  });

  it('keeps the escaped key and the null creator address as data', () => {
    const page = JSON.parse(listPageJson(3, rows, 5, {}));
    assert.deepStrictEqual(page.items.map((i: { key: string }) => i.key), rows.map(r => r.key));
    assert.strictEqual(page.items[1].metadata.creatorIp, '');
    assert.strictEqual(page.items[1].metadata.createdAt, '2025-01-02T03:04:05.006Z');
  });
});
