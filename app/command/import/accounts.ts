import crypto from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import type { SourceAccount } from './source';
import { Walk, same, sameTime } from './walk';

const sha256 = (s: string) => crypto.createHash('sha256').update(s).digest('hex');

function accountRow(a: SourceAccount) {
  return {
    id: a.id,
    provider: a.provider,
    providerId: a.providerId,
    email: a.email,
    name: a.name,
    avatarUrl: a.avatarUrl,
    providerData: a.providerData === null ? null : JSON.stringify(JSON.parse(a.providerData)),
    // This server keeps only the SHA-256 of the refresh token (app/model/account.ts).
    refreshTokenHash: a.refreshToken === null ? null : sha256(a.refreshToken),
    refreshTokenExpiry: a.refreshTokenExpiry,
    tokenVersion: a.tokenVersion,
    createdAt: a.createdAt,
    updatedAt: a.updatedAt,
  };
}

/** Accounts (ids kept), compared by id and by provider account. */
export async function walkAccounts(w: Walk) {
  const { mode, r } = w;
  for await (const page of w.source.accounts(500)) {
    const here = await w.target.accounts(page.map(a => a.id), page.map(a => ({ provider: a.provider, providerId: a.providerId })));
    const byId = new Map(here.map(a => [ a.id, a ]));
    const byProvider = new Map(here.map(a => [ `${a.provider}\n${a.providerId}`, a ]));
    const inserts: Array<ReturnType<typeof accountRow>> = [];
    const replaces: Array<ReturnType<typeof accountRow>> = [];
    for (const a of page) {
      r.tally.accounts.source += 1;
      const row = accountRow(a);
      const t = byId.get(a.id);
      const p = byProvider.get(`${a.provider}\n${a.providerId}`);
      const reasons: string[] = [];
      if (a.provider.length > 64) reasons.push('cannot be stored here: provider longer than 64 characters');
      if (p && p.id !== a.id) reasons.push(`provider account belongs to account ${p.id} here`);
      if (t) {
        const diff = [ 'provider', 'providerId', 'email', 'name', 'avatarUrl', 'refreshTokenHash', 'tokenVersion' ]
          .filter(f => !same((t as unknown as Record<string, unknown>)[f], (row as Record<string, unknown>)[f]));
        if (!isDeepStrictEqual(t.providerData === null ? null : JSON.parse(t.providerData), row.providerData === null ? null : JSON.parse(row.providerData))) diff.push('providerData');
        for (const f of [ 'refreshTokenExpiry', 'createdAt', 'updatedAt' ] as const) if (!sameTime(t[f], row[f])) diff.push(f);
        if (diff.length) reasons.push(`here with other ${diff.join(', ')}`);
      }
      const status = reasons.length ? 'conflict' : t ? 'same' : 'new';
      const action = w.decide('accounts', status, `account ${a.id}`, reasons.join('; '), a.provider.length <= 64);
      if (action === 'insert') inserts.push(row);
      if (action === 'replace') replaces.push(row);
    }
    if (mode !== 'write' || (inserts.length === 0 && replaces.length === 0)) continue;
    await w.target.transaction(async transaction => {
      for (const row of replaces) {
        await w.target.Account.destroy({ where: { id: row.id }, transaction });
        await w.target.Account.destroy({ where: { provider: row.provider, providerId: row.providerId }, transaction });
      }
      const rows = [ ...inserts, ...replaces ];
      await w.target.Account.bulkCreate(rows, { transaction });
      r.tally.accounts.copied += rows.length;
    });
  }
}

// ---------------------------------------------------------------- devices
