import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.elasticsearch.common.logging.LogConfigurator;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.env.Environment;
import org.elasticsearch.node.Node;
import org.elasticsearch.plugins.PluginBundle;
import org.elasticsearch.plugins.PluginsLoader;

/**
 * A real single-node Elasticsearch 8 for tests, assembled from Maven Central jars: the server jar
 * on the classpath and the transport-netty4 module (REST over HTTP) in HOME/modules, loaded the way
 * the distribution loads its modules. Usage: EsTestNode HOME_DIR HTTP_PORT. Prints "READY port"
 * once the node has started; stops on SIGTERM or when stdin closes, so it cannot outlive the test
 * process that launched it.
 */
public final class EsTestNode {
    public static void main(String[] args) throws Exception {
        Path home = Path.of(args[0]).toAbsolutePath();
        int httpPort = Integer.parseInt(args[1]);
        Files.createDirectories(home.resolve("config"));
        Files.createDirectories(home.resolve("plugins"));
        Settings settings = Settings.builder()
            .put("path.home", home.toString())
            .put("path.data", home.resolve("data").toString())
            .put("path.logs", home.resolve("logs").toString())
            .put("cluster.name", "mcp-sidecar-test")
            .put("node.name", "es-test-0")
            .put("network.host", "127.0.0.1")
            .put("http.port", httpPort)
            .put("transport.port", 0)
            .put("discovery.type", "single-node")
            .put("cluster.routing.allocation.disk.threshold_enabled", false)
            .put("logger.level", "WARN")
            .build();
        LogConfigurator.configureESLogging();
        LogConfigurator.configureWithoutConfig(settings);
        Environment env = new Environment(settings, home.resolve("config"));
        Set<PluginBundle> modules = PluginsLoader.loadModulesBundles(env.modulesDir());
        PluginsLoader loader = PluginsLoader.createPluginsLoader(modules, Set.of(), Map.of());
        Node node = new Node(env, loader);
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
                node.awaitClose(10, TimeUnit.SECONDS);
            } catch (Exception e) {
                e.printStackTrace();
            }
            stopped.countDown();
        }));
        node.start();
        System.out.println("READY " + httpPort);
        System.out.flush();
        Thread watchdog = new Thread(() -> {
            try {
                while (System.in.read() != -1) { }
            } catch (Exception ignored) { }
            System.exit(0);
        }, "stdin-watchdog");
        watchdog.setDaemon(true);
        watchdog.start();
        stopped.await();
    }
}
