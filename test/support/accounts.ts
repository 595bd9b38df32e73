import { app } from 'egg-mock/bootstrap';

const saved: Array<typeof app.config.classworks.accounts> = [];

/** Changes account settings in the running app (providers, callback base, lifetimes); undo with restoreAccounts(). */
export function configureAccounts(values: Partial<typeof app.config.classworks.accounts>) {
  const accounts = app.config.classworks.accounts;
  saved.push({ ...accounts });
  Object.assign(accounts, values);
}

/** Undoes the last configureAccounts(). */
export function restoreAccounts() {
  const last = saved.pop();
  if (last) Object.assign(app.config.classworks.accounts, last);
}
