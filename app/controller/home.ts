import { Controller } from 'egg';

const PAGE = `<!DOCTYPE html>
<html lang="zh-CN">
<head><meta charset="utf-8"><title>Classworks 服务端</title></head>
<body><h1>Classworks 服务端</h1><p>服务运行中。API 健康检查：<a href="/check">/check</a></p></body>
</html>
`;

export default class HomeController extends Controller {
  async index() {
    this.ctx.type = 'text/html; charset=utf-8';
    this.ctx.body = PAGE;
  }

  async check() {
    this.ctx.body = { status: 'success', message: 'API is running', time: Date.now() };
  }
}
