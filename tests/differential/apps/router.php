<?php
// PHP's built-in server as the application:
//     DIFF_LOG=/tmp/log php -S 127.0.0.1:PORT router.php
// Like Symfony and Laravel, a POST may say which method it stands for
// (X-HTTP-Method-Override, or `_method` in a form body).
$path = parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH);
if ($path === null || $path === false) {
    $path = $_SERVER['REQUEST_URI'];
}
// Routers of PHP frameworks (Symfony, Laravel) match on the decoded path.
$path = rawurldecode($path);
$method = $_SERVER['REQUEST_METHOD'];
$body = file_get_contents('php://input');
if ($method === 'POST') {
    $override = $_SERVER['HTTP_X_HTTP_METHOD_OVERRIDE'] ?? ($_POST['_method'] ?? '');
    if ($override !== '') {
        $method = strtoupper($override);
    }
}
$routes = [
    'POST /login' => 'login',
    'POST /admin' => 'admin',
    'GET /search' => 'search',
    'HEAD /search' => 'search',
    'GET /' => 'public',
    'GET /public' => 'public',
];
$handler = $routes["$method $path"] ?? null;
if ($handler === null && $method === 'POST' && str_starts_with($path, '/api/')) {
    $handler = 'api';
}
if ($handler === null) {
    http_response_code(404);
    echo "not found\n";
    return true;
}
$line = [
    'app' => 'php',
    'handler' => $handler,
    'method' => $method,
    'path' => $path,
    'marker' => $_SERVER['HTTP_X_GATEKEEPER_CAPTCHA'] ?? null,
    'variant' => $_SERVER['HTTP_X_DIFF_VARIANT'] ?? null,
    'content_type' => $_SERVER['CONTENT_TYPE'] ?? null,
    'request_id' => $_SERVER['HTTP_X_REQUEST_ID'] ?? null,
    'host' => $_SERVER['HTTP_HOST'] ?? null,
    'body' => substr($body, 0, 2000),
];
file_put_contents(getenv('DIFF_LOG'), json_encode($line) . "\n", FILE_APPEND | LOCK_EX);
header('Content-Type: text/plain');
echo $handler === 'public' ? 'public' : "protected:$handler";
return true;
