"""Scrapy doing the benchmark's task on the fixture site: index -> tags -> books, items
(title, author, price, rating) written as JSON lines. Run by bench/run.sh:

    scrapy runspider scrapy_books.py -a start=http://127.0.0.1:PORT/index.html -o items.jsonl

`start` may list several URLs, comma-separated (bench/hosts.sh).
"""

import scrapy


class BooksSpider(scrapy.Spider):
    name = "books"
    custom_settings = {
        "ROBOTSTXT_OBEY": True,
        "LOG_LEVEL": "WARNING",
        "TELNETCONSOLE_ENABLED": False,
        "COOKIES_ENABLED": False,
        "RETRY_TIMES": 2,
        "DOWNLOAD_TIMEOUT": 10,
        # Breadth-first, like the crawler's frontier.
        "DEPTH_PRIORITY": 1,
        "SCHEDULER_DISK_QUEUE": "scrapy.squeues.PickleFifoDiskQueue",
        "SCHEDULER_MEMORY_QUEUE": "scrapy.squeues.FifoMemoryQueue",
    }

    def __init__(self, start, **kwargs):
        super().__init__(**kwargs)
        self.start_urls = start.split(",")

    def parse(self, response):
        for href in response.css("a.tag::attr(href)").getall():
            yield response.follow(href, self.parse_tag)

    def parse_tag(self, response):
        for href in response.css("a.book::attr(href)").getall():
            yield response.follow(href, self.parse_book)
        for href in response.css("a.next::attr(href)").getall():
            yield response.follow(href, self.parse_tag)

    def parse_book(self, response):
        yield {
            "url": response.url,
            "title": response.css("h1.title::text").get(default="").strip(),
            "author": response.css("span.author::text").get(default="").strip(),
            "price": response.css("span.price::text").get(default="").strip(),
            "rating": response.css("span.rating::text").get(default="").strip(),
        }
        for href in response.css("a.book::attr(href)").getall():
            yield response.follow(href, self.parse_book)
