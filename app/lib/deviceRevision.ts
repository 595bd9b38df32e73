import { QueryTypes } from 'sequelize';
import type { Sequelize, Transaction } from 'sequelize';

/**
 * Raises a device's revision by `n` inside `transaction` and returns the first new number
 * (the change log's revisions for the `n` changes are that one and the next n − 1). The
 * row lock taken here also serialises concurrent writes of one device, so `created` and
 * revisions are exact. Used by the KV writes (app/service/kv.ts) and the import.
 */
export async function bumpRevision(db: Sequelize, deviceId: number, n: number, transaction: Transaction): Promise<number> {
  await db.query('UPDATE devices SET revision = revision + ? WHERE id = ?', {
    replacements: [ n, deviceId ], transaction, type: QueryTypes.UPDATE,
  });
  const rows = await db.query('SELECT revision FROM devices WHERE id = ?', {
    replacements: [ deviceId ], transaction, type: QueryTypes.SELECT, raw: true,
  }) as Array<{ revision: number | string }>;
  return Number(rows[0].revision) - n + 1;
}
