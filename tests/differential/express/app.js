// Express 4 with its default router (case-insensitive, non-strict trailing
// slash) and method-override honouring the usual headers and `_method` on any
// method. The node server's `upgrade` event answers 101 with no real WebSocket
// handshake and hands the socket back to the HTTP server: a request written
// into that "tunnel" is served by Express.
//
//     DIFF_LOG=/tmp/log node app.js PORT
'use strict';
const fs = require('fs');
const http = require('http');
const express = require('express');
const methodOverride = require('method-override');

const app = express();
for (const getter of ['X-HTTP-Method-Override', 'X-HTTP-Method', 'X-Method-Override', '_method']) {
  app.use(methodOverride(getter, { methods: null }));
}
app.use(express.raw({ type: () => true, limit: '2mb' }));

function handler(name) {
  return (req, res) => {
    const body = Buffer.isBuffer(req.body) ? req.body.toString('utf8').slice(0, 2000) : '';
    const line = {
      app: 'express',
      handler: name,
      method: req.method,
      path: req.path,
      marker: req.get('X-Gatekeeper-Captcha') ?? null,
      variant: req.get('X-Diff-Variant') ?? null,
      content_type: req.get('Content-Type') ?? null,
      request_id: req.get('X-Request-Id') ?? null,
      host: req.get('Host') ?? null,
      body,
    };
    fs.appendFileSync(process.env.DIFF_LOG, JSON.stringify(line) + '\n');
    res.type('text/plain').send(name === 'public' ? 'public' : `protected:${name}`);
  };
}

app.post('/login', handler('login'));
app.post('/admin', handler('admin'));
app.get('/search', handler('search'));
app.post('/api/*', handler('api'));
app.get(['/', '/public'], handler('public'));

const server = http.createServer(app);
server.on('upgrade', (req, socket, head) => {
  socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
  if (head && head.length) socket.unshift(head);
  server.emit('connection', socket);
});
server.listen(Number(process.argv[2]), '127.0.0.1');
