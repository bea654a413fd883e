-- TLS through pgpool, against a second throwaway server of this spec's own
-- (spec/support/pgserver.sh) that takes TCP connections over SSL only
-- (pg_hba: hostssl), with a certificate for localhost and 127.0.0.1 signed
-- by a CA made here with openssl. The shared test server is left alone.
local helpers = require 'spec.support.helpers'
local pgpool = require 'pgpool'

local shquote, run = helpers.shquote, helpers.run
local must_run, write_file = helpers.must_run, helpers.write_file

-- A CA (DIR/NAME.crt, DIR/NAME.key), self-signed.
local function make_ca(dir, name)
  must_run(('openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 '
    .. '-keyout %s -out %s -days 2 -subj %s'):format(shquote(dir .. '/' .. name .. '.key'),
      shquote(dir .. '/' .. name .. '.crt'), shquote('/CN=pgpool test ' .. name)))
end

-- The server's key and certificate (DIR/server.key, DIR/server.crt): CN
-- localhost, SAN localhost and 127.0.0.1, signed by the CA `ca`.
local function make_server_cert(dir, ca)
  local function path(name) return shquote(dir .. '/' .. name) end
  write_file(dir .. '/server.ext', 'subjectAltName = DNS:localhost, IP:127.0.0.1\n'
    .. 'basicConstraints = CA:FALSE\nextendedKeyUsage = serverAuth\n')
  must_run(('openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 '
    .. '-keyout %s -out %s -subj /CN=localhost'):format(path('server.key'), path('server.csr')))
  must_run(('openssl x509 -req -in %s -CA %s -CAkey %s -CAcreateserial -out %s -days 2 -extfile %s')
    :format(path('server.csr'), path(ca .. '.crt'), path(ca .. '.key'), path('server.crt'),
      path('server.ext')))
  must_run('chmod 0600 ' .. path('server.key'))
end

describe('TLS', function()
  local dir, port, ca_file, other_ca_file

  setup(function()
    dir = must_run('mktemp -d "${TMPDIR:-/tmp}/pgpool-tls.XXXXXX"')
    local tls = dir .. '/tls'
    must_run('mkdir ' .. shquote(tls))
    make_ca(tls, 'ca')
    make_ca(tls, 'other-ca')
    make_server_cert(tls, 'ca')
    ca_file, other_ca_file = tls .. '/ca.crt', tls .. '/other-ca.crt'
    write_file(dir .. '/extra.conf', ("ssl = on\nssl_cert_file = '%s/server.crt'\n"
      .. "ssl_key_file = '%s/server.key'\n"):format(tls, tls))
    write_file(dir .. '/pg_hba.conf', 'local all all trust\nhostssl all all 127.0.0.1/32 trust\n')
    must_run(('PGSERVER_EXTRA_CONF=%s PGSERVER_HBA=%s spec/support/pgserver.sh start %s 20')
      :format(shquote(dir .. '/extra.conf'), shquote(dir .. '/pg_hba.conf'), shquote(dir)))
    port = tonumber(helpers.read_file(dir .. '/env'):match('PGPOOL_TEST_PORT=(%d+)'))
    assert(port, 'no port in ' .. dir .. '/env')
  end)

  teardown(function()
    pgpool.shutdown_all{ timeout = 1 }
    if dir then run('spec/support/pgserver.sh stop ' .. shquote(dir)) end
  end)

  after_each(function()
    pgpool.shutdown_all{ timeout = 1 }
  end)

  local function pool_for(name, params)
    return pgpool.configure{
      name = name, log_level = 'off', connect_timeout = 5,
      conninfo = ('host=%s port=%d dbname=pgpool_test user=postgres %s')
        :format(params.host or '127.0.0.1', port, params.extra),
    }
  end

  local function ssl_in_use(pool)
    local res = assert(pool:query('select ssl from pg_stat_ssl where pid = pg_backend_pid()'))
    return res[1].ssl
  end

  it('connects with sslmode=require, and the server sees SSL in use', function()
    local pool = pool_for('tls-require', { extra = 'sslmode=require' })
    assert.is_true(ssl_in_use(pool))
  end)

  it('connects with sslmode=verify-full to localhost when the certificate checks out against the CA', function()
    local pool = pool_for('tls-verify-full', { host = 'localhost',
      extra = 'sslmode=verify-full sslrootcert=' .. ca_file })
    assert.is_true(ssl_in_use(pool))
  end)

  it('fails verify-full against another CA with code "connect" and a one-line message', function()
    local pool = pool_for('tls-wrong-ca', { host = 'localhost',
      extra = 'sslmode=verify-full sslrootcert=' .. other_ca_file })
    local conn, msg, code = pool:acquire{ timeout = 5 }
    assert.is_nil(conn)
    assert.are.equal('connect', code)
    assert.matches('certificate verify failed', msg)
    assert.is_nil(msg:find('\n', 1, true), msg)
    assert.is_nil(msg:find('%s$'), msg)
  end)

  it('is refused without SSL (sslmode=disable) by a server that takes hostssl only', function()
    local pool = pool_for('tls-disable', { extra = 'sslmode=disable' })
    local conn, msg, code = pool:acquire{ timeout = 5 }
    assert.is_nil(conn)
    assert.are.equal('connect', code)
    assert.matches('no pg_hba.conf entry', msg)
    assert.matches('no encryption', msg)
  end)
end)
