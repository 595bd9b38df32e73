import UAParser from 'ua-parser-js';

/** Longest User-Agent header parsed (ua-parser-js 1.x cuts at 500 characters as well). */
const MAX_PARSED = 500;

/**
 * A short human name for the client behind a User-Agent header (joined.tokenInfo.deviceName,
 * senderInfo.deviceName): "Brand Model" when the device is known, else "OS version", plus
 * " (Browser major)" when the browser is known; "Unknown Device" when nothing is.
 * ua-parser-js 1.x (MIT; 2.x is AGPL). Call once per socket, not per event.
 */
export function describeUserAgent(userAgent: string): string {
  if (!userAgent) return 'Unknown Device';
  const { device, os, browser } = new UAParser(userAgent.slice(0, MAX_PARSED)).getResult();
  const join = (...parts: Array<string | undefined>) => parts.filter(p => p).join(' ');
  const base = device.vendor || device.model ? join(device.vendor, device.model) : join(os.name, os.version);
  const client = join(browser.name, browser.major ?? browser.version);
  if (base && client) return `${base} (${client})`;
  return base || client || 'Unknown Device';
}

/** The deviceName of a token: the client's name, then ` - <note>` when the token has a note. */
export function deviceNameOf(clientName: string, note: string | null): string {
  return note ? `${clientName} - ${note}` : clientName;
}
