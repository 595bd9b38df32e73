import { Controller } from 'egg';
import { forbidden } from '../lib/errors';
import * as rules from '../validator/app';
import { isPlainObject } from '../validator/common';

/**
 * /apps/tokens/:token/... (§6.2): a token names itself. The token in the path is the
 * authentication; the answers' order is the contract's: input, then the token, then
 * its kind, then the service's rules.
 */
export default class TokensController extends Controller {
  private get body(): Record<string, unknown> {
    const b = (this.ctx.request as { body?: unknown }).body;
    return isPlainObject(b) ? b : {};
  }

  async setStudentName() {
    const name = rules.studentName(this.body.name);
    const install = await this.service.tokens.byToken(rules.pathToken(this.ctx.params.token));
    if (install.deviceType !== 'student' && install.deviceType !== 'parent') {
      throw forbidden('只有学生和家长类型的 token 可以设置名称');
    }
    this.ctx.body = await this.service.tokens.setStudentName(install, name);
  }

  async setTeacherName() {
    const name = rules.teacherName(this.body.name);
    const install = await this.service.tokens.byToken(rules.pathToken(this.ctx.params.token));
    if (install.deviceType !== 'teacher') throw forbidden('只有教师类型的 token 可以使用此接口');
    this.ctx.body = await this.service.tokens.setTeacherName(install, name);
  }

  async setNote() {
    const note = rules.tokenNote(this.body.note);
    const install = await this.service.tokens.byToken(rules.pathToken(this.ctx.params.token));
    this.ctx.body = await this.service.tokens.setNote(install, note);
  }
}
